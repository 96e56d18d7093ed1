"""What every CLI shares: one-line errors, exit codes from the exception tree, output helpers."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from runtools.errors import RuntoolsError


class ArgParser(argparse.ArgumentParser):
    """argparse with one-line errors (`prog: message (see prog --help)`) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def run_main(prog: str, fn: Callable[[], int], error_exit: Callable[[RuntoolsError], int] | None = None) -> NoReturn:
    """Call `fn` and exit with its code; RuntoolsError becomes one line on stderr."""
    try:
        code = fn()
    except RuntoolsError as e:
        sys.stderr.write(f"{prog}: {e}\n")
        code = error_exit(e) if error_exit else e.exit_code
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # the reader of our stdout went away (e.g. `taro history | head`): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    sys.exit(code)


def add_env(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-e", "--env", metavar="ENV",
        help="environment: a name under $RUNTOOLS_HOME (default: $RUNTOOLS_ENV or 'local'), or a directory path",
    )


def print_json(value: Any) -> None:
    import json

    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def print_ndjson(value: Any) -> None:
    import json

    sys.stdout.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()
