"""taro history (hist): what ran."""

from __future__ import annotations

import sys

from runtools.cli.views import add_common, add_patterns, env_of, state_text, status_text

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse

HELP = "what ran (alias: hist)"


def configure(p: argparse.ArgumentParser) -> None:
    add_common(p)
    add_patterns(p)
    p.add_argument("-n", "--limit", type=int, default=None, metavar="N", help="at most N runs (newest)")
    p.add_argument("--since", metavar="TIME", help="created at/after: ISO 8601, today, yesterday, or an age (2h)")
    p.add_argument("--until", metavar="TIME", help="created before (same forms as --since)")
    p.add_argument("--status", action="append", default=[], metavar="STATUS", help="e.g. FAILED (repeatable)")
    p.add_argument("--outcome", action="append", default=[], metavar="OUTCOME",
                   help="SUCCESS, ABORTED, REJECTED or FAULT (repeatable)")
    p.add_argument("--last", action="store_true", help="only the latest run of each job")
    p.add_argument("--active", action="store_true", help="include active runs (default: ended runs only)")


def run(args: argparse.Namespace) -> int:
    from runtools.env.base import RunQuery
    from runtools.errors import UsageError
    from runtools.model.criteria import RunMatcher
    from runtools.model.durations import parse_instant
    from runtools.model.status import Outcome, Status

    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be 0 or more")
    outcomes = []
    for o in args.outcome:
        try:
            outcomes.append(Outcome(o.upper()))
        except ValueError:
            raise UsageError(f"unknown outcome {o!r}: use SUCCESS, ABORTED, REJECTED or FAULT") from None
    q = RunQuery(
        matcher=RunMatcher.parse(args.patterns),
        active=None if args.active else False,
        since=parse_instant(args.since, "--since") if args.since else None,
        until=parse_instant(args.until, "--until") if args.until else None,
        statuses=tuple(Status.parse(s) for s in args.status),
        outcomes=tuple(outcomes),
        limit=args.limit,
        last_per_job=args.last,
    )
    with env_of(args) as env:
        env.active_runs()  # settle runs whose process is gone (LOST) before showing them
        runs = env.find_runs(q)
    if args.json:
        from runtools.cli.common import print_json

        print_json([r.to_json() for r in runs])
        return 0
    from runtools.cli.table import local_time, render
    from runtools.model.durations import human_duration

    rows = [
        [
            r.job_id,
            r.run_id,
            local_time(r.created_at, today_short=False),
            human_duration(r.duration),
            state_text(r),
            "" if r.exit_code is None else str(r.exit_code),
            status_text(r),
        ]
        for r in runs
    ]
    sys.stdout.write(render(["JOB", "RUN ID", "CREATED", "EXEC TIME", "STATUS", "EXIT", "NOTES"], rows))
    return 0
