"""`run job [OPTIONS] [--] COMMAND [ARG...]`: wrap one command (also `taro exec`)."""

from __future__ import annotations

import argparse
import os
import sys

from runtools.cli.common import ArgParser, add_env, run_main
from runtools.errors import RuntoolsError, UsageError

EXIT_WRAPPER_FAILED = 125
NOTIFY_FD_ENV = "RUNTOOLS_NOTIFY_FD"


def add_job_options(p: argparse.ArgumentParser) -> None:
    add_env(p)
    p.add_argument("-j", "--id", dest="job_id", metavar="JOB", help="job id (default: command basename without extension)")
    p.add_argument("--run-id", metavar="ID", help="run id (default: generated, sorts by time)")
    p.add_argument("--tag", action="append", default=[], metavar="TAG", help="tag the run (repeatable)")
    p.add_argument("-b", "--bypass-output", action="store_true", help="leave output alone; store nothing")
    p.add_argument("-d", "--detach", action="store_true", help="run in the background; print the run as JSON")
    p.add_argument("--timeout", metavar="DUR", help="TERM the command after DUR (status TIMEOUT, exit 124)")
    p.add_argument("--kill-after", metavar="DUR", default="10s", help="KILL this long after TERM (default 10s)")
    p.add_argument("--time-warn", metavar="DUR", help="record a warning when execution exceeds DUR")
    p.add_argument("--output-warn", action="append", default=[], metavar="REGEX", help="warn on matching lines")
    g = p.add_argument_group("coordination")
    g.add_argument("-x", "--mutual-exclusion", action="store_true", help="end OVERLAP if the group is executing")
    g.add_argument("--excl-group", metavar="G", help="mutual exclusion group (default: job id)")
    g.add_argument("--serial", action="store_true", help="same as --max-concurrent 1")
    g.add_argument("--max-concurrent", type=int, metavar="N", help="queue while N runs of the group execute")
    g.add_argument("--queue-group", metavar="G", help="execution queue group (default: job id)")
    g.add_argument("--pending", metavar="LATCH", help="wait PENDING until `taro release LATCH`")
    g.add_argument("--approval", metavar="NAME", help="wait PENDING until `taro approve`")
    g.add_argument("--pending-timeout", metavar="DUR", help="end TIMEOUT if not released within DUR")
    g.add_argument("--requires", action="append", default=[], metavar="PATTERN", help="run only if PATTERN is active")
    g.add_argument("--after", action="append", default=[], metavar="PATTERN", help="wait for PATTERN to end and succeed")
    g.add_argument("--after-timeout", metavar="DUR", help="give up waiting for --after (TIMEOUT)")
    k = p.add_argument_group("start-once")
    k.add_argument("--run-key", metavar="KEY", help="at most one active run per key; others attach")
    k.add_argument("--strict", action="store_true", help="with --run-key: one run per key ever (see taro unlock)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")


def spec_from_args(a: argparse.Namespace):  # -> JobSpec
    from runtools.job.spec import JobSpec
    from runtools.model.durations import parse_duration

    cmd = list(a.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise UsageError("no command given: put it after the options, e.g. run job --id hello -- echo hi")
    if cmd[0].startswith("-") and cmd[0] != "-":
        raise UsageError(f"unknown option {cmd[0]!r}: put the command after --, e.g. run job -- {cmd[0]}")
    if a.max_concurrent is not None and a.max_concurrent < 1:
        raise UsageError("--max-concurrent must be at least 1")
    if a.strict and not a.run_key:
        raise UsageError("--strict needs --run-key KEY")

    def dur(v, name):
        return None if v is None else parse_duration(v, name)

    return JobSpec(
        command=cmd,
        job_id=a.job_id,
        run_id=a.run_id,
        tags=a.tag,
        bypass_output=a.bypass_output,
        timeout=dur(a.timeout, "--timeout"),
        kill_after=parse_duration(a.kill_after, "--kill-after"),
        time_warn=dur(a.time_warn, "--time-warn"),
        output_warn=a.output_warn,
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
        run_key=a.run_key,
        strict=a.strict,
    )


def execute(a: argparse.Namespace, argv: list[str]) -> int:
    spec = spec_from_args(a)
    from runtools.model.ids import validate_id

    validate_id(spec.resolved_job_id, "job id")
    if a.detach:
        return _detach(argv)
    from runtools.env import open_environment
    from runtools.job.spec import build_run

    notify = _notifier()
    with open_environment(a.env) as env:
        job = build_run(env, spec, on_created=notify)
        result = job.run()
        if result.existing:
            if notify:
                notify(result.run, existing=True)
            from runtools.job.waiting import wait_for_end

            ended = wait_for_end(env, result.run)
            from runtools.job.instance import exit_code_for

            return exit_code_for(ended)
        if result.run.error and result.run.status is not None and result.run.status.value in ("ERROR", "TIMEOUT"):
            sys.stderr.write(f"run: {result.run.error}\n")
        return result.exit_code


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

    child_argv = [x for x in argv if x not in ("-d", "--detach")] if "--" not in argv else _strip_detach(argv)
    r, w = os.pipe()
    env = dict(os.environ, **{NOTIFY_FD_ENV: str(w)})
    log = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"runtools-detach-{os.getpid()}.log")
    with open(log, "wb") as errf:
        subprocess.Popen(
            [sys.executable, "-m", "runtools.cli.run", *child_argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf,
            pass_fds=(w,), env=env, start_new_session=True,
        )
    os.close(w)
    chunks = []
    while data := os.read(r, 65536):
        chunks.append(data)
    os.close(r)
    try:
        err = open(log, "rb").read().decode("utf-8", "replace").strip()
    finally:
        os.unlink(log)
    if not chunks:
        sys.stderr.write(err + "\n" if err else "run: the detached run failed to start\n")
        return EXIT_WRAPPER_FAILED
    sys.stdout.write(json.dumps(json.loads(b"".join(chunks)), indent=2) + "\n")
    return 0


def _strip_detach(argv: list[str]) -> list[str]:
    i = argv.index("--")
    return [x for x in argv[:i] if x not in ("-d", "--detach")] + argv[i:]


def parser(prog: str = "run job") -> ArgParser:
    p = ArgParser(prog=prog, description="Run COMMAND as a job: coordinated, captured, recorded.")
    add_job_options(p)
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv

    def go() -> int:
        if not argv or argv[0] in ("-h", "--help"):
            sys.stdout.write("usage: run job [OPTIONS] [--] COMMAND [ARG...]\n\nSee `run job --help`.\n")
            return 0 if argv else 2
        if argv[0] != "job":
            raise UsageError(f"unknown command {argv[0]!r}: use `run job [OPTIONS] [--] COMMAND`")
        rest = argv[1:]
        a = parser().parse_args(rest)
        return execute(a, ["job", *rest])

    def error_exit(e: RuntoolsError) -> int:
        return 2 if isinstance(e, UsageError) else EXIT_WRAPPER_FAILED

    run_main("run", go, error_exit)


if __name__ == "__main__":
    main()
