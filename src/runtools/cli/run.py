"""`run job [OPTIONS] [--] COMMAND [ARG...]`: wrap one command (also `taro exec`).

Options are parsed by a small table-driven parser: argparse costs `run job` several ms to
import, more than the wrapper's own work. The same table builds an argparse parser for
`--help`, so help and behaviour cannot drift apart.
"""

from __future__ import annotations

import os
import sys

from runtools.cli.common import MAX_COUNT, guard_stdio, run_main, say
from runtools.errors import RuntoolsError, UsageError
from runtools.model.status import EXIT_WRAPPER_FAILED

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

NOTIFY_FD_ENV = "RUNTOOLS_NOTIFY_FD"

# (flags, dest, kind, metavar, help, group); kind: flag | value | append | int
OPTIONS: list[tuple[tuple[str, ...], str, str, str | None, str, str]] = [
    (("-e", "--env"), "env", "value", "ENV",
     "environment: a name (runtools.toml [environments], or under $RUNTOOLS_HOME) or a directory path "
     "(default: $RUNTOOLS_ENV, else [defaults] env of runtools.toml, else 'local')", ""),
    (("-j", "--id"), "job_id", "value", "JOB", "job id (default: command basename without extension)", ""),
    (("--run-id",), "run_id", "value", "ID", "run id (default: generated, sorts by time)", ""),
    (("--tag",), "tag", "append", "TAG", "tag the run (repeatable)", ""),
    (("-b", "--bypass-output"), "bypass_output", "flag", None, "leave output alone; store nothing", ""),
    (("-d", "--detach"), "detach", "flag", None, "run in the background; print the run as JSON at once", ""),
    (("--timeout",), "timeout", "value", "DUR", "TERM the command's group after DUR (TIMEOUT, exit 124)", ""),
    (("--kill-after",), "kill_after", "value", "DUR", "KILL this long after TERM (default 10s)", ""),
    (("--time-warn",), "time_warn", "value", "DUR", "record a warning when execution exceeds DUR", ""),
    (("--output-warn",), "output_warn", "append", "REGEX", "record a warning for matching lines (repeatable)", ""),
    (("--output-limit",), "output_limit", "value", "SIZE",
     "store at most SIZE per stream, keeping the tail (512K, 100M, 2G; 0 none; default 1G)", ""),
    (("-x", "--mutual-exclusion"), "mutual_exclusion", "flag", None,
     "end OVERLAP if a run of the group is executing", "coordination"),
    (("--excl-group",), "excl_group", "value", "G", "mutual exclusion group (default: job id)", "coordination"),
    (("--serial",), "serial", "flag", None, "same as --max-concurrent 1", "coordination"),
    (("--max-concurrent",), "max_concurrent", "int", "N", "wait QUEUED while N runs of the group execute",
     "coordination"),
    (("--queue-group",), "queue_group", "value", "G", "execution queue group (default: job id)", "coordination"),
    (("--pending",), "pending", "value", "LATCH", "wait PENDING until `taro release LATCH`", "coordination"),
    (("--approval",), "approval", "value", "NAME", "wait PENDING until `taro approve`", "coordination"),
    (("--pending-timeout",), "pending_timeout", "value", "DUR", "end TIMEOUT if not released within DUR",
     "coordination"),
    (("--requires",), "requires", "append", "PATTERN", "execute only if a run matching PATTERN is active",
     "coordination"),
    (("--after",), "after", "append", "PATTERN", "wait while PATTERN is active; run if its last run succeeded",
     "coordination"),
    (("--after-timeout",), "after_timeout", "value", "DUR", "give up waiting for --after (TIMEOUT)", "coordination"),
    (("--service",), "service", "append", "NAME",
     "wait WAITING until service NAME admits the run (rate/concurrency; repeatable; see taro service)",
     "coordination"),
    (("--run-key",), "run_key", "value", "KEY", "at most one active run per key; later callers attach", "start-once"),
    (("--strict",), "strict", "flag", None, "with --run-key: one run per key ever (see taro unlock)", "start-once"),
]
_BY_FLAG = {flag: opt for opt in OPTIONS for flag in opt[0]}


class Args:
    """Parsed `run job` options (attribute access like argparse's Namespace)."""

    env: str | None
    job_id: str | None
    run_id: str | None
    tag: list[str]
    bypass_output: bool
    detach: bool
    timeout: str | None
    kill_after: str | None
    time_warn: str | None
    output_warn: list[str]
    output_limit: str | None
    mutual_exclusion: bool
    excl_group: str | None
    serial: bool
    max_concurrent: int | None
    queue_group: str | None
    pending: str | None
    approval: str | None
    pending_timeout: str | None
    requires: list[str]
    after: list[str]
    after_timeout: str | None
    service: list[str]
    run_key: str | None
    strict: bool

    def __init__(self) -> None:
        for _flags, dest, kind, *_ in OPTIONS:
            setattr(self, dest, [] if kind == "append" else False if kind == "flag" else None)
        self.command: list[str] = []


def parse_args(argv: list[str], prog: str = "run job") -> Args:
    """Options up to the first non-option (or `--`); everything after is the command."""
    a = Args()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            a.command = argv[i + 1 :]
            return a
        if arg in ("-h", "--help"):
            help_parser(prog).print_help()
            raise SystemExit(0)
        if not arg.startswith("-") or arg == "-":
            a.command = argv[i:]
            return a
        if arg.startswith("--"):
            name, eq, inline = arg.partition("=")
            opt = _BY_FLAG.get(name)
            if opt is None:
                raise UsageError(f"unrecognized option {name} (see {prog} --help)")
            i = _apply(a, opt, name, inline if eq else None, argv, i, prog)
            continue
        # short options, possibly clustered: -xb, -jhello, -j hello
        j = 1
        while j < len(arg):
            name = "-" + arg[j]
            opt = _BY_FLAG.get(name)
            if opt is None:
                raise UsageError(f"unrecognized option {name} (see {prog} --help)")
            if opt[2] == "flag":
                setattr(a, opt[1], True)
                j += 1
                continue
            rest = arg[j + 1 :]
            i = _apply(a, opt, name, rest or None, argv, i, prog) - 1
            break
        i += 1
    return a


def _apply(a: Args, opt: tuple, name: str, inline: str | None, argv: list[str], i: int, prog: str) -> int:
    _flags, dest, kind, *_ = opt
    if kind == "flag":
        if inline is not None:
            raise UsageError(f"option {name} takes no value (see {prog} --help)")
        setattr(a, dest, True)
        return i + 1
    if inline is None:
        if i + 1 >= len(argv):
            raise UsageError(f"option {name} needs a value (see {prog} --help)")
        inline = argv[i + 1]
        i += 1
    if inline == "":  # `--pending "$UNSET"` must not run ungated
        raise UsageError(f"option {name} needs a value, not an empty string (see {prog} --help)")
    if not inline.isascii():
        from runtools.cli.common import value_problem

        if value_problem(inline):
            raise UsageError(f"option {name}: {inline!r} is not valid UTF-8 text")
    if kind == "int":
        try:
            value: object = int(inline)
        except ValueError:
            raise UsageError(f"option {name} needs a whole number, not {inline!r}") from None
        if not -MAX_COUNT <= value <= MAX_COUNT:  # type: ignore[operator]
            raise UsageError(f"option {name}: {inline!r} is out of range (at most {MAX_COUNT})")
        setattr(a, dest, value)
    elif kind == "append":
        getattr(a, dest).append(inline)
    else:
        setattr(a, dest, inline)
    return i + 1


def help_parser(prog: str = "run job") -> argparse.ArgumentParser:
    from runtools.cli.common import ArgParser

    p = ArgParser(prog=prog, usage=f"{prog} [OPTIONS] [--] COMMAND [ARG...]",
                  description="Run COMMAND as a job: coordinated, captured, recorded. "
                              "Exit code: the command's own (see README for wrapper codes).")
    add_job_options(p)
    return p


def add_job_options(p: argparse.ArgumentParser) -> None:
    groups: dict[str, Any] = {"": p}
    for flags, dest, kind, metavar, text, group in OPTIONS:
        g = groups.get(group) or groups.setdefault(group, p.add_argument_group(group))
        if kind == "flag":
            g.add_argument(*flags, dest=dest, action="store_true", help=text)
        elif kind == "append":
            g.add_argument(*flags, dest=dest, action="append", default=[], metavar=metavar, help=text)
        else:
            g.add_argument(*flags, dest=dest, type=int if kind == "int" else str, metavar=metavar, help=text)
    import argparse

    p.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")


def spec_from_args(a: Args):  # -> JobSpec
    from runtools.job.spec import JobSpec

    cmd = list(a.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise UsageError("no command given: put it after the options, e.g. run job --id hello -- echo hi")
    if not cmd[0]:
        raise UsageError("empty command: the first word after the options is an empty string")
    if a.max_concurrent is not None and a.max_concurrent < 1:
        raise UsageError("--max-concurrent must be at least 1")
    if a.strict and not a.run_key:
        raise UsageError("--strict needs --run-key KEY")
    for option, value, needs, partner in (
        ("--excl-group", a.excl_group, a.mutual_exclusion, "-x/--mutual-exclusion"),
        ("--queue-group", a.queue_group, a.max_concurrent or a.serial, "--max-concurrent N or --serial"),
        ("--pending-timeout", a.pending_timeout, a.pending or a.approval, "--pending LATCH or --approval NAME"),
        ("--after-timeout", a.after_timeout, a.after, "--after PATTERN"),
    ):
        if value is not None and not needs:
            raise UsageError(f"{option} only applies with {partner}: add it, or drop {option}")

    def dur(v: str | None, name: str) -> float | None:
        if v is None:
            return None
        from runtools.model.durations import parse_duration

        return parse_duration(v, name)

    kill_after = dur(a.kill_after, "--kill-after")
    if a.requires or a.after:  # bad patterns are usage errors before anything is created
        from runtools.model.criteria import RunMatcher

        for option, patterns in (("--requires", a.requires), ("--after", a.after)):
            try:
                RunMatcher.parse(patterns)
            except UsageError as e:
                raise UsageError(f"{option}: {e}") from None
    return JobSpec(
        command=cmd,
        job_id=a.job_id,
        run_id=a.run_id,
        tags=a.tag,
        bypass_output=a.bypass_output,
        timeout=dur(a.timeout, "--timeout") or None,  # 0 means no timeout, as with coreutils timeout
        kill_after=10.0 if kill_after is None else kill_after,
        time_warn=dur(a.time_warn, "--time-warn"),
        output_warn=a.output_warn,
        output_limit=_output_limit(a.output_limit),
        mutual_exclusion=a.mutual_exclusion,
        excl_group=a.excl_group,
        max_concurrent=1 if a.serial else a.max_concurrent,
        queue_group=a.queue_group,
        pending=a.pending,
        approval=a.approval,
        pending_timeout=dur(a.pending_timeout, "--pending-timeout"),
        requires=a.requires,
        after=a.after,
        after_timeout=dur(a.after_timeout, "--after-timeout"),
        services=a.service,
        run_key=a.run_key,
        strict=a.strict,
    )


def _output_limit(v: str | None) -> int:
    from runtools.output.capture import output_floor, output_limit

    output_floor()  # a bad $RUNTOOLS_OUTPUT_FLOOR is a usage error before anything is created
    return output_limit(v)  # the option, else $RUNTOOLS_OUTPUT_LIMIT


def checked_spec(a: Args):  # -> JobSpec
    """The JobSpec of `a`, every option checked (UsageError) before anything is created."""
    spec = spec_from_args(a)
    from runtools.model.ids import validate_id

    validate_id(spec.resolved_job_id if a.job_id is None else a.job_id, "job id (--id)")
    if a.run_id is not None:
        validate_id(a.run_id, "run id (--run-id)")
    for t in spec.tags:
        validate_id(t, "tag (--tag)")
    for name in spec.services:
        validate_id(name, "service name (--service)")
    if spec.output_warn:
        from runtools.output.capture import compile_warnings

        compile_warnings(spec.output_warn)
    return spec


def execute(a: Args, argv: list[str]) -> int:
    """Run the job described by `a`; `argv` (options + command) is re-used by --detach."""
    from runtools.config import apply_job_defaults

    apply_job_defaults(a)  # [jobs."PATTERN"] of runtools.toml; free when there is no config file
    spec = checked_spec(a)
    if a.detach:
        return _detach(argv)
    from runtools.env import open_environment
    from runtools.job.instance import exit_code_for
    from runtools.job.spec import build_run

    notify = _notifier()
    with open_environment(a.env) as env:
        job = build_run(env, spec, on_created=notify)
        result = job.run()
        if result.existing:
            if notify:
                notify(result.run, existing=True)
                return 0
            from runtools.job.waiting import wait_for_end

            existing = result.run
            if existing.active:
                say(f"run: run key {existing.run_key} is held by {existing.instance_id}: waiting for it")
                existing = wait_for_end(env, existing)
            else:
                from runtools.model.text import shell_quote

                key = existing.run_key or ""
                say(
                    f"run: run key {key} already ran ({existing.instance_id} {existing.status}): "
                    f"not run again; `taro unlock {shell_quote(key)}` allows one more run"
                )
                return result.exit_code  # 105 DUPLICATE, not the old run's code
            return exit_code_for(existing)
        _explain(result.run)
        return result.exit_code


def _explain(run) -> None:
    """One line on stderr when the command could not run or did not run at all (OVERLAP,
    DISABLED, DENIED, ...): the exit code alone does not say why."""
    status = run.status
    if status is None or status.value in ("COMPLETED", "FAILED", "STOPPED", "INTERRUPTED"):
        return
    if status.value == "TIMEOUT" or run.started_at is None:
        error = run.error or ""
        prefix = status.value.lower() + ": "
        if error.lower().startswith(prefix):  # "OVERLAP: overlap: ..." says it twice
            error = error[len(prefix):]
        why = f": {error}" if error and error != status.value else ""
        say(f"run: {run.instance_id} {status.value}{why}")


def _notifier():
    """In a detached child: tell the parent the run exists (its record as JSON on a pipe)."""
    fd = os.environ.pop(NOTIFY_FD_ENV, None)
    if fd is None:
        return None
    fd_i = int(fd)
    sent = [False]

    def notify(run, existing: bool = False) -> None:
        if sent[0]:
            return
        sent[0] = True
        import json

        doc = run.to_json()
        doc["existing"] = existing
        try:
            os.write(fd_i, json.dumps(doc).encode())
        finally:
            os.close(fd_i)
        _to_devnull()

    return notify


def _to_devnull() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _detach(argv: list[str]) -> int:
    """Start `run job` without -d in a new session; print the record it reports, at once."""
    import json
    import subprocess
    import tempfile

    r, w = os.pipe()
    env = dict(os.environ, **{NOTIFY_FD_ENV: str(w)})
    with tempfile.TemporaryFile() as errf:
        subprocess.Popen(
            [sys.executable, "-m", "runtools.cli.run", *_strip_detach(argv)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf,
            pass_fds=(w,), env=env, start_new_session=True,
        )
        os.close(w)
        chunks = []
        while data := os.read(r, 65536):
            chunks.append(data)
        os.close(r)
        if not chunks:
            errf.seek(0)
            err = errf.read().decode("utf-8", "replace").strip()
            say(err or "run: the detached run failed to start")
            return EXIT_WRAPPER_FAILED
    sys.stdout.write(json.dumps(json.loads(b"".join(chunks)), indent=2) + "\n")
    return 0


def _strip_detach(argv: list[str]) -> list[str]:
    """Drop -d/--detach from the options part of argv (never from the command)."""
    a = parse_args(argv[1:])
    opts = argv[1 : len(argv) - len(a.command)]
    out = []
    for o in opts:
        if o in ("-d", "--detach"):
            continue
        if o.startswith("-") and not o.startswith("--") and "d" in o[1:] and all(
            _BY_FLAG.get("-" + c, ("", "", ""))[2] == "flag" for c in o[1:]
        ):
            o = "-" + o[1:].replace("d", "")
            if o == "-":
                continue
        out.append(o)
    return [argv[0], *out, *a.command]


def main(argv: list[str] | None = None) -> None:
    guard_stdio()  # before anything opens a file: a closed fd 1 must not become the database
    argv = sys.argv[1:] if argv is None else argv

    def go() -> int:
        if not argv or argv[0] in ("-h", "--help"):
            sys.stdout.write("usage: run job [OPTIONS] [--] COMMAND [ARG...]\n\nSee `run job --help`.\n")
            return 0 if argv else 2
        if argv[0] == "completion":  # run completion bash|zsh|fish: the same script as taro's
            from runtools.cli.taro.completion import run_argv

            return run_argv(argv[1:], prog="run")
        if argv[0] != "job":
            raise UsageError(f"unknown command {argv[0]!r}: use `run job [OPTIONS] [--] COMMAND`")
        a = parse_args(argv[1:])
        from runtools.cli.common import check_environment

        check_environment("RUNTOOLS_ENV", "RUNTOOLS_HOME")
        return execute(a, argv)

    def error_exit(e: RuntoolsError) -> int:
        return 2 if isinstance(e, UsageError) else EXIT_WRAPPER_FAILED

    run_main("run", go, error_exit, fast_exit=True)


if __name__ == "__main__":
    main()
