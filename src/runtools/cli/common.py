"""What every CLI shares: one-line errors, exit codes from the exception tree, output helpers,
the standard descriptors, and the checks every option value goes through."""

from __future__ import annotations

import os
import sys

from runtools.errors import RuntoolsError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterable
    from typing import Any, NoReturn

#: the largest count any option takes (`-n`, `--lines`, `--max-concurrent`, ...): SQLite's
#: INTEGER and C's ssize_t stop here; beyond it a value is a typo, not a wish
MAX_COUNT = 2**63 - 1
#: exit code when our stdout is a pipe whose reader left (`taro history | head -1`): not an error
EXIT_READER_GONE = 0

#: which of 0, 1, 2 were closed when the command started (now /dev/null; see guard_stdio)
CLOSED_STD_FDS: frozenset[int] = frozenset()


def guard_stdio() -> frozenset[int]:
    """Put /dev/null on any of the standard descriptors 0, 1, 2 that is closed; returns them.

    Call it first thing in every entry point, before anything opens a file: with fd 1 closed,
    the next open() (a database, an output file) would get fd 1, and whatever we print or
    forward "to the terminal" would go into that file. The command we run inherits /dev/null,
    a sensible descriptor, instead of a closed one. Python leaves `sys.stdout`/`sys.stderr`
    None when it starts with them closed: they get a stream on /dev/null, so printing is safe.
    """
    global CLOSED_STD_FDS
    closed = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.append(fd)
    for fd in closed:
        try:
            null = os.open(os.devnull, os.O_RDWR)
        except OSError:
            break  # no /dev/null (a bare chroot): nothing better to put there
        if null != fd:
            os.dup2(null, fd)  # inheritable
            os.close(null)
        else:
            os.set_inheritable(fd, True)  # os.open makes close-on-exec descriptors
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is None:
            try:
                mode, errors = ("r", None) if fd == 0 else ("w", "backslashreplace")
                setattr(sys, name, open(fd, mode, closefd=False, errors=errors))
            except OSError:
                pass
    CLOSED_STD_FDS = frozenset(closed)
    return CLOSED_STD_FDS


def say(line: str) -> None:
    """One line on stderr, made printable; never raises (stderr may be a closed pipe)."""
    from runtools.model.text import printable  # only when there is something to say

    try:
        sys.stderr.write(printable(line) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def reader_gone() -> int:
    """Our stdout's reader left (EPIPE): point fd 1 at /dev/null so that no later flush fails,
    and exit quietly with EXIT_READER_GONE."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    except OSError:
        pass
    return EXIT_READER_GONE


def whole_number(text: str) -> int:
    """argparse type for counts (registered for `type=int` on our parsers): a whole number
    within +-MAX_COUNT, so no value overflows SQLite or C further down."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if not -MAX_COUNT <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (at most {MAX_COUNT})")
    return value


def value_problem(value: str) -> str | None:
    """Why `value` cannot be the value of an option or argument, or None. Empty is never a
    value (`--pending "$UNSET"` must not silently drop the gate), and text that is not UTF-8
    (undecodable bytes in argv) cannot be stored, matched or shown."""
    if value == "":
        return "must not be empty"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid UTF-8 text"
    return None


def bad_option(parser: argparse.ArgumentParser, ns: Any, allow: Iterable[str] = ()) -> str | None:
    """`argument NAME: why` for the first option or argument of `parser` whose value in `ns`
    has a value_problem; None if there is none. REMAINDER arguments (a command's own words)
    are left alone: a command may take any bytes."""
    import argparse

    for action in parser._actions:
        if action.nargs == 0 or action.nargs == argparse.REMAINDER or action.dest in allow:
            continue
        if isinstance(action, argparse._SubParsersAction):
            continue
        value = getattr(ns, action.dest, None)
        name = "/".join(action.option_strings) or action.metavar or action.dest
        if isinstance(action, argparse._StoreAction) and action.nargs is None and isinstance(value, list):
            return f"argument {name}: expected one argument"  # `--opt=--`: argparse 3.11 stores []
        for v in value if isinstance(value, list) else [value]:
            why = value_problem(v) if isinstance(v, str) else None
            if why:
                return f"argument {name}: {why}"
    return None


def check_environment(*names: str) -> None:
    """An environment variable that is set but empty is a mistake (`X="$UNSET"`), not a wish
    for the default: say so instead of using a default directory or environment."""
    from runtools.errors import UsageError

    for name in names:
        if os.environ.get(name) == "":
            raise UsageError(f"${name} is set but empty: unset it, or set it to a value")


def ArgParser(*args: Any, **kw: Any) -> argparse.ArgumentParser:
    """argparse with one-line errors (`prog: message (see prog --help)`) and exit code 2;
    `type=int` is a bounded whole number; an empty value is an error naming the option.
    (Built on demand: `run job` parses its options without argparse.)"""
    import argparse

    class _ArgParser(argparse.ArgumentParser):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            self.register("type", int, whole_number)

        def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
            ns, rest = super().parse_known_args(args, namespace)
            bad = bad_option(self, ns)
            if bad:
                self.error(bad)
            return ns, rest

        def error(self, message: str) -> NoReturn:
            say(f"{self.prog}: {message} (see {self.prog} --help)")
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
        say(f"{prog}: {e}")
        code = error_exit(e) if error_exit else e.exit_code
    except KeyboardInterrupt:
        code = 130
    except SystemExit as e:  # --help, argparse's errors: flushed below like any other end
        if e.code is not None and not isinstance(e.code, int):
            raise
        code = e.code or 0
    except BrokenPipeError:  # the reader of our stdout went away (e.g. `taro history | head`)
        code = reader_gone()
    except Exception as e:  # a bug: one line, and the traceback only when asked for
        if os.environ.get("RUNTOOLS_DEBUG"):
            raise
        say(f"{prog}: internal error: {type(e).__name__}: {e} (set RUNTOOLS_DEBUG=1 for details)")
        code = 125 if prog == "run" else 1
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = reader_gone() if code == 0 else code
    except (OSError, ValueError):
        pass
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    if fast_exit:
        os._exit(code)
    sys.exit(code)


def add_env(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-e", "--env", metavar="ENV",
        help="environment: a name (runtools.toml [environments], or under $RUNTOOLS_HOME) or a directory path "
             "(default: $RUNTOOLS_ENV, else [defaults] env of runtools.toml, else 'local')",
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
