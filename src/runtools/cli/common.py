"""What every CLI shares: one-line errors, exit codes from the exception tree, output helpers."""

from __future__ import annotations

import os
import sys

from runtools.errors import RuntoolsError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any, NoReturn


def ArgParser(*args: Any, **kw: Any) -> argparse.ArgumentParser:
    """argparse with one-line errors (`prog: message (see prog --help)`) and exit code 2.
    (Built on demand: `run job` parses its options without argparse.)"""
    import argparse

    class _ArgParser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            sys.stderr.write(f"{self.prog}: {message} (see {self.prog} --help)\n")
            raise SystemExit(2)

    return _ArgParser(*args, **kw)


def run_main(
    prog: str, fn: Callable[[], int], error_exit: Callable[[RuntoolsError], int] | None = None, fast_exit: bool = False
) -> NoReturn:
    """Call `fn` and exit with its code; RuntoolsError becomes one line on stderr.

    `fast_exit` skips interpreter teardown (`os._exit` after flushing): everything durable is
    already committed, and tearing down modules costs a short-lived wrapper milliseconds.
    """
    try:
        code = fn()
    except RuntoolsError as e:
        sys.stderr.write(f"{prog}: {e}\n")
        code = error_exit(e) if error_exit else e.exit_code
    except KeyboardInterrupt:
        code = 130
    except SystemExit:
        raise
    except BrokenPipeError:
        # the reader of our stdout went away (e.g. `taro history | head`): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    except Exception as e:  # a bug: one line, and the traceback only when asked for
        if os.environ.get("RUNTOOLS_DEBUG"):
            raise
        sys.stderr.write(f"{prog}: internal error: {type(e).__name__}: {e} (set RUNTOOLS_DEBUG=1 for details)\n")
        code = error_exit(e) if error_exit and isinstance(e, RuntoolsError) else (125 if prog == "run" else 1)
    if fast_exit:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:
            pass
        os._exit(code)
    sys.exit(code)


def add_env(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-e", "--env", metavar="ENV",
        help="environment: a name under $RUNTOOLS_HOME (default: $RUNTOOLS_ENV or 'local'), or a directory path",
    )


def print_json(value: Any) -> None:
    """Pretty JSON, as `json.dumps(value, indent=2)` writes it (without importing json)."""
    from runtools.model.jsonenc import dumps

    sys.stdout.write(dumps(value, indent=2) + "\n")


def print_ndjson(value: Any) -> None:
    """One compact JSON document per line, flushed at once (for streams: listen, tail -f)."""
    from runtools.model.jsonenc import dumps

    sys.stdout.write(dumps(value) + "\n")
    sys.stdout.flush()
