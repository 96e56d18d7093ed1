"""`orchesjob`: start-once runs for orchestrators (seed 004). Parses, calls, prints JSON.

Exit codes: 0 ok (also when the job failed: see its JSON), 1 general error, 2 invalid
arguments, 3 job or run key not found, 4 invalid state, 5 lock error (busy database).
Errors are one line on stderr: `orchesjob: <message>`.
"""

from __future__ import annotations

import argparse
import os
import sys

TYPE_CHECKING = False  # keep `typing` off the hot path
if TYPE_CHECKING:
    from typing import Any, NoReturn

PROG = "orchesjob"
VERSION = "1.1.0 (runtools)"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{PROG}: {message}\n")
        raise SystemExit(2)


def _key_or_id(p: argparse.ArgumentParser, running: bool = False) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--run-key", dest="run_key", metavar="RUN_KEY", help="look up by run key (its latest job)")
    g.add_argument("--job-id", dest="job_id", metavar="JOB_ID", help="look up by job id")
    if running:
        g.add_argument("--running", action="store_true", help="all STARTING/RUNNING jobs")


def _secs(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds: {text!r}") from None
    if v != v or v < 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"invalid number of seconds: {text!r}")
    return v


def _count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid line count: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"invalid line count: {text!r}")
    return v


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Lightweight idempotent one-shot job runner (on runtools)")
    p.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    sub = p.add_subparsers(dest="subcommand", required=True, parser_class=_Parser)

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


def _print(value: Any) -> None:
    import json

    sys.stdout.write(json.dumps(value, indent=2) + "\n")
    sys.stdout.flush()


def _who(verb: str) -> str:
    import getpass

    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return f"{user} (orchesjob {verb}, pid {os.getpid()})"


def _start(a: argparse.Namespace) -> int:
    from runtools.orchesjob.view import start_response
    from runtools.orchesjob.worker import start

    cmd = list(a.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        from runtools.errors import UsageError

        raise UsageError("command is required (provide it after --)")
    got = start(cmd, a.run_key, strict=a.strict, sync=a.sync, start_timeout=a.start_timeout)
    mode = "sync" if a.sync else "async"
    _print(start_response(got.run, existing=got.existing, mode=mode, strict=a.strict,
                          override_used=got.override_used))
    return 0


def _rerun(a: argparse.Namespace) -> int:
    from runtools.orchesjob import open_env, ops
    from runtools.orchesjob.view import start_response
    from runtools.orchesjob.worker import start

    with open_env() as env:
        src = ops.rerun_source(env, a.run_key, a.job_id)
    got = start(list(src.command or []), src.run_key or "", sync=a.sync, start_timeout=a.start_timeout,
                rerun_of=src, reason=a.reason)
    out = start_response(got.run, existing=got.existing, mode="sync" if a.sync else "async", strict=False)
    out["rerun"] = True
    _print(out)
    return 0


def _status(a: argparse.Namespace) -> int:
    from runtools.orchesjob import open_env, ops

    with open_env() as env:
        _print(ops.status(env, a.run_key, a.job_id, a.running, a.all))
    return 0


def _logs(a: argparse.Namespace) -> int:
    from runtools.orchesjob import open_env, ops

    with open_env() as env:
        rec, path = ops.log_path(env, a.run_key, a.job_id, a.stream)
        ops.write_logs(env, rec, path, a.stream, a.tail, a.follow, sys.stdout.buffer)
    return 0


def _abort(a: argparse.Namespace) -> int:
    from runtools.orchesjob import open_env, ops

    with open_env() as env:
        _print(ops.abort(env, a.run_key, a.job_id, a.reason, a.grace_seconds, _who("abort")))
    return 0


def _unlock(a: argparse.Namespace) -> int:
    from runtools.orchesjob import open_env, ops

    ops.parse_ttl(a.ttl)  # bad input fails before touching the state directory
    with open_env() as env:
        _print(ops.unlock(env, a.run_key, a.reason, a.ttl, _who("unlock")))
    return 0


def _clean(a: argparse.Namespace) -> int:
    from runtools.orchesjob import open_env, ops

    with open_env() as env:
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
    from runtools.errors import RuntoolsError

    argv = sys.argv[1:] if argv is None else argv
    try:
        a = parser().parse_args(argv)
        if a.subcommand == "clean":  # the selection rules come before any I/O
            from runtools.orchesjob.ops import clean_args_error

            msg = clean_args_error(a.before, a.after, a.all, a.job_id, a.run_key)
            if msg:
                from runtools.errors import UsageError

                raise UsageError(msg)
        code = COMMANDS[a.subcommand](a)
    except RuntoolsError as e:
        sys.stderr.write(f"{PROG}: {e}\n")
        code = e.exit_code if e.exit_code in (1, 2, 3, 4, 5) else 1
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    main()
