"""`orchesjob`: start-once runs for orchestrators (seed 004). Parses, calls, prints JSON.

Exit codes: 0 ok (also when the job failed: see its JSON), 1 general error, 2 invalid
arguments, 3 job or run key not found, 4 invalid state, 5 lock error (busy database).
Errors are one line on stderr: `orchesjob: <message>`.

Arguments are parsed by a small table-driven parser (`parse_args`): argparse, with the `re`,
`enum` and `gettext` it imports, costs more than a `status` does. It only accepts what it is
sure argparse would accept the same way; anything else (`--help`, `--version`, abbreviations,
a missing or invalid value, an unknown option...) goes to the argparse parser built by
`parser()`, which prints help or the exact error (exit 2) as before.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # keep `typing` off the hot path
if TYPE_CHECKING:
    import argparse
    from typing import Any, NoReturn

PROG = "orchesjob"
VERSION = "1.1.0 (runtools)"


def _parser_class(**kw: Any) -> argparse.ArgumentParser:
    import argparse

    from runtools.cli.common import bad_option, say

    class Parser(argparse.ArgumentParser):
        def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
            ns, rest = super().parse_known_args(args, namespace)
            bad = bad_option(self, ns)
            if bad:  # `--run-key "$UNSET"` is a mistake, never a value
                self.error(bad)
            return ns, rest

        def error(self, message: str) -> NoReturn:
            say(f"{PROG}: {message}")
            raise SystemExit(2)

    return Parser(**kw)


def _key_or_id(p: Any, running: bool = False) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--run-key", dest="run_key", metavar="RUN_KEY", help="look up by run key (its latest job)")
    g.add_argument("--job-id", dest="job_id", metavar="JOB_ID", help="look up by job id")
    if running:
        g.add_argument("--running", action="store_true", help="all STARTING/RUNNING jobs")


def _invalid(message: str) -> Exception:
    import argparse

    return argparse.ArgumentTypeError(message)


def _secs(text: str) -> float:
    from runtools.model.durations import MAX_DURATION_S

    try:
        v = float(text)
    except ValueError:
        raise _invalid(f"invalid number of seconds: {text!r}") from None
    if v != v or v < 0 or v > MAX_DURATION_S:  # NaN, negative, inf, past the 100-year ceiling
        raise _invalid(f"invalid number of seconds: {text!r}")
    return v


def _count(text: str) -> int:
    from runtools.cli.common import MAX_COUNT

    try:
        v = int(text)
    except ValueError:
        raise _invalid(f"invalid line count: {text!r}") from None
    if v < 0 or v > MAX_COUNT:
        raise _invalid(f"invalid line count: {text!r}")
    return v


def parser() -> argparse.ArgumentParser:
    """The argparse parser: for --help, --version and the exact text of every argument error."""
    import argparse

    p = _parser_class(prog=PROG, description="Lightweight idempotent one-shot job runner (on runtools)")
    p.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    sub = p.add_subparsers(dest="subcommand", required=True, parser_class=_parser_class)  # type: ignore[call-overload]

    s = sub.add_parser("start", help="start a job, or return the one that holds the run key")
    s.add_argument("--run-key", required=True, dest="run_key", metavar="RUN_KEY", help="idempotency key")
    s.add_argument("--sync", action="store_true", help="wait until the job ends")
    s.add_argument("--strict", action="store_true", help="one execution per run key, ever (see unlock)")
    s.add_argument("--start-timeout", type=_secs, default=10.0, metavar="SECS",
                   help="seconds an async start waits for the target to run (default: 10)")
    s.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")

    s = sub.add_parser("status", help="the latest job of a run key, a job, all running jobs")
    _key_or_id(s, running=True)
    s.add_argument("--all", action="store_true", help="every job of --run-key, newest attempt first")

    s = sub.add_parser("logs", help="print a job's stdout or stderr")
    _key_or_id(s)
    s.add_argument("--stream", default="stdout", choices=["stdout", "stderr"], help="default: stdout")
    s.add_argument("--tail", type=_count, metavar="N", help="only the last N lines")
    s.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")

    s = sub.add_parser("abort", help="stop a running job: TERM, then KILL after the grace period")
    _key_or_id(s)
    s.add_argument("--reason", help="stored as abort_reason")
    s.add_argument("--grace-seconds", type=_secs, default=5.0, metavar="SECS",
                   help="seconds between SIGTERM and SIGKILL (default: 5)")

    s = sub.add_parser("unlock", help="allow one more `start --strict` of a finished run key")
    s.add_argument("--run-key", required=True, dest="run_key", metavar="RUN_KEY")
    s.add_argument("--reason", help="stored with the override (and as the new job's rerun_reason)")
    s.add_argument("--ttl", metavar="DURATION", help="override expiry: seconds, or 30s/30m/2h/1d")

    s = sub.add_parser("rerun", help="start a new execution of a finished job with its command")
    _key_or_id(s)
    s.add_argument("--sync", action="store_true", help="wait until the new job ends")
    s.add_argument("--reason", help="stored as rerun_reason")
    s.add_argument("--start-timeout", type=_secs, default=10.0, metavar="SECS",
                   help="seconds an async rerun waits for the target to run (default: 10)")

    s = sub.add_parser("clean", help="delete finished jobs and their logs (never active ones)")
    s.add_argument("--before", metavar="DATETIME", help="finished before (ISO 8601; naive = local time)")
    s.add_argument("--after", metavar="DATETIME", help="finished at or after (ISO 8601)")
    s.add_argument("--all", action="store_true", help="every finished job")
    s.add_argument("--job-id", dest="job_id", metavar="JOB_ID", help="one finished job")
    s.add_argument("--run-key", dest="run_key", metavar="RUN_KEY", help="only this run key")
    s.add_argument("--dry-run", action="store_true", help="print what would be deleted; change nothing")
    return p


# -- the fast parser ---------------------------------------------------------------------------
# Per subcommand: option -> (dest, kind), kind: flag | value | secs | count | stream; the
# defaults; the required options; the mutually exclusive group that needs exactly one member.
_KEY_OR_ID = {"--run-key": ("run_key", "value"), "--job-id": ("job_id", "value")}
_TABLE: dict[str, tuple[dict[str, tuple[str, str]], dict[str, Any], tuple[str, ...], tuple[str, ...]]] = {
    "start": (
        {"--run-key": ("run_key", "value"), "--sync": ("sync", "flag"), "--strict": ("strict", "flag"),
         "--start-timeout": ("start_timeout", "secs")},
        {"run_key": None, "sync": False, "strict": False, "start_timeout": 10.0, "command": []},
        ("run_key",), (),
    ),
    "status": (
        {**_KEY_OR_ID, "--running": ("running", "flag"), "--all": ("all", "flag")},
        {"run_key": None, "job_id": None, "running": False, "all": False},
        (), ("run_key", "job_id", "running"),
    ),
    "logs": (
        {**_KEY_OR_ID, "--stream": ("stream", "stream"), "--tail": ("tail", "count"),
         "-f": ("follow", "flag"), "--follow": ("follow", "flag")},
        {"run_key": None, "job_id": None, "stream": "stdout", "tail": None, "follow": False},
        (), ("run_key", "job_id"),
    ),
    "abort": (
        {**_KEY_OR_ID, "--reason": ("reason", "value"), "--grace-seconds": ("grace_seconds", "secs")},
        {"run_key": None, "job_id": None, "reason": None, "grace_seconds": 5.0},
        (), ("run_key", "job_id"),
    ),
    "unlock": (
        {"--run-key": ("run_key", "value"), "--reason": ("reason", "value"), "--ttl": ("ttl", "value")},
        {"run_key": None, "reason": None, "ttl": None},
        ("run_key",), (),
    ),
    "rerun": (
        {**_KEY_OR_ID, "--sync": ("sync", "flag"), "--reason": ("reason", "value"),
         "--start-timeout": ("start_timeout", "secs")},
        {"run_key": None, "job_id": None, "sync": False, "reason": None, "start_timeout": 10.0},
        (), ("run_key", "job_id"),
    ),
    "clean": (
        {"--before": ("before", "value"), "--after": ("after", "value"), "--all": ("all", "flag"),
         "--job-id": ("job_id", "value"), "--run-key": ("run_key", "value"), "--dry-run": ("dry_run", "flag")},
        {"before": None, "after": None, "all": False, "job_id": None, "run_key": None, "dry_run": False},
        (), (),
    ),
}


class Args:
    """Parsed arguments (attribute access, like argparse's Namespace)."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


def fast_parse(argv: list[str]) -> Args | None:
    """`argv` parsed as argparse would, or None when argparse must decide (help, version,
    errors, abbreviations, values that look like options, ...)."""
    if not argv or argv[0] not in _TABLE:
        return None
    options, defaults, required, one_of = _TABLE[argv[0]]
    values = dict(defaults)
    seen: set[str] = set()
    i, n = 1, len(argv)
    while i < n:
        arg = argv[i]
        if not arg.startswith("-") or arg == "-" or arg == "--":
            if argv[0] != "start":
                return None  # a positional: argparse's error
            values["command"] = argv[i:]  # REMAINDER: everything from here, `--` included
            break
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        opt = options.get(name)
        if opt is None:
            return None
        dest, kind = opt
        if kind == "flag":
            if eq:
                return None
            values[dest] = True
        else:
            if eq:
                value = inline
            elif i + 1 < n and not argv[i + 1].startswith("-"):
                i += 1
                value = argv[i]
            else:
                return None
            if not value or not value.isascii():
                return None  # empty or not UTF-8: argparse's parser names the option
            if kind == "secs" or kind == "count":
                try:
                    values[dest] = _secs(value) if kind == "secs" else _count(value)
                except Exception:
                    return None
            elif kind == "stream":
                if value not in ("stdout", "stderr"):
                    return None
                values[dest] = value
            else:
                values[dest] = value
        seen.add(dest)
        i += 1
    if any(r not in seen for r in required):
        return None
    if one_of and sum(d in seen for d in one_of) != 1:
        return None
    return Args(subcommand=argv[0], **values)


def parse_args(argv: list[str]) -> Any:
    a = fast_parse(argv)
    return a if a is not None else parser().parse_args(argv)


def _print(value: Any) -> None:
    from runtools.model.jsonenc import dumps

    sys.stdout.write(dumps(value, indent=2) + "\n")
    sys.stdout.flush()


def _who(verb: str) -> str:
    import getpass

    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return f"{user} (orchesjob {verb}, pid {os.getpid()})"


def _start(a: Any) -> int:
    from runtools.orchesjob.view import start_response
    from runtools.orchesjob.worker import start

    cmd = list(a.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        from runtools.errors import UsageError

        raise UsageError("command is required (provide it after --)")
    if not cmd[0]:
        from runtools.errors import UsageError

        raise UsageError("empty command: the first word after -- is an empty string")
    got = start(cmd, a.run_key, strict=a.strict, sync=a.sync, start_timeout=a.start_timeout)
    mode = "sync" if a.sync else "async"
    _print(start_response(got.run, existing=got.existing, mode=mode, strict=a.strict,
                          override_used=got.override_used))
    return 0


def _rerun(a: Any) -> int:
    from runtools.orchesjob import open_env, ops
    from runtools.orchesjob.view import start_response
    from runtools.orchesjob.worker import start

    with open_env(create=False) as env:
        src = ops.rerun_source(env, a.run_key, a.job_id)
    got = start(list(src.command or []), src.run_key or "", sync=a.sync, start_timeout=a.start_timeout,
                rerun_of=src, reason=a.reason)
    out = start_response(got.run, existing=got.existing, mode="sync" if a.sync else "async", strict=False)
    out["rerun"] = True
    _print(out)
    return 0


def _status(a: Any) -> int:
    from runtools.orchesjob import open_env, ops

    with open_env(create=False) as env:
        _print(ops.status(env, a.run_key, a.job_id, a.running, a.all))
    return 0


def _logs(a: Any) -> int:
    from runtools.orchesjob import open_env, ops

    with open_env(create=False) as env:
        rec, path = ops.log_path(env, a.run_key, a.job_id, a.stream)
        ops.write_logs(env, rec, path, a.stream, a.tail, a.follow, sys.stdout.buffer)
    return 0


def _abort(a: Any) -> int:
    from runtools.orchesjob import open_env, ops

    with open_env(create=False) as env:
        _print(ops.abort(env, a.run_key, a.job_id, a.reason, a.grace_seconds, _who("abort")))
    return 0


def _unlock(a: Any) -> int:
    from runtools.orchesjob import open_env, ops

    ops.parse_ttl(a.ttl)  # bad input fails before touching the state directory
    with open_env(create=False) as env:
        _print(ops.unlock(env, a.run_key, a.reason, a.ttl, _who("unlock")))
    return 0


def _clean(a: Any) -> int:
    from runtools.orchesjob import open_env, ops

    with open_env(create=False) as env:
        _print(ops.clean(env, a.before, a.after, a.all, a.job_id, a.run_key, a.dry_run))
    return 0


COMMANDS = {
    "start": _start,
    "status": _status,
    "logs": _logs,
    "abort": _abort,
    "unlock": _unlock,
    "rerun": _rerun,
    "clean": _clean,
}


def main(argv: list[str] | None = None) -> NoReturn:
    from runtools.cli.common import guard_stdio

    guard_stdio()  # before anything opens a file: a closed fd 1 must not become the database
    from runtools.errors import RuntoolsError

    argv = sys.argv[1:] if argv is None else argv
    try:
        a = parse_args(argv)
        from runtools.cli.common import check_environment

        check_environment("ORCHESJOB_HOME", "ORCHESJOB_LOCK_TIMEOUT")
        if a.subcommand == "clean":  # the selection rules come before any I/O
            from runtools.orchesjob.ops import clean_args_error

            msg = clean_args_error(a.before, a.after, a.all, a.job_id, a.run_key)
            if msg:
                from runtools.errors import UsageError

                raise UsageError(msg)
        code = COMMANDS[a.subcommand](a)
    except RuntoolsError as e:
        from runtools.cli.common import say

        say(f"{PROG}: {e}")
        code = e.exit_code if e.exit_code in (1, 2, 3, 4, 5) else 1
    except KeyboardInterrupt:
        code = 130
    except SystemExit as e:  # --help, --version, argument errors: flushed like any other end
        if e.code is not None and not isinstance(e.code, int):
            raise
        code = e.code or 0
    except BrokenPipeError:  # the reader of our stdout left (`orchesjob status | head -1`)
        from runtools.cli.common import reader_gone

        code = reader_gone()
    _exit(code)


def _exit(code: int) -> NoReturn:
    """Exit without tearing the interpreter down (os._exit once stdout and stderr are flushed):
    everything durable is committed by now, and the teardown costs a command ~2 ms of CPU,
    a seventh of a `status` (and of each start in a burst)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left: as before, not an error
        from runtools.cli.common import reader_gone

        code = reader_gone() if code == 0 else code
    except (OSError, ValueError):
        code = code or 120  # what the interpreter's own final flush would have exited with
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(code)


if __name__ == "__main__":
    main()
