"""taro stats: per job runs, success rate, last status, p50/p95/max duration."""

from __future__ import annotations

import sys

from runtools.cli.views import add_common, add_patterns, env_of

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse

HELP = "per job: runs, success rate, last status, p50/p95/max duration"


def configure(p: argparse.ArgumentParser) -> None:
    add_common(p)
    add_patterns(p)
    p.add_argument("--since", metavar="TIME", help="only runs created at/after TIME")


def run(args: argparse.Namespace) -> int:
    from runtools.env.base import RunQuery
    from runtools.model.criteria import RunMatcher
    from runtools.model.durations import iso, parse_instant

    q = RunQuery(matcher=RunMatcher.parse(args.patterns),
                 since=parse_instant(args.since, "--since") if args.since else None)
    with env_of(args) as env:
        env.active_runs()
        rows = env.stats(q)
    if args.json:
        from runtools.cli.common import print_json

        for r in rows:
            r["last_created_at"] = iso(r["last_created_at"])
        print_json(rows)
        return 0
    from runtools.cli.table import render
    from runtools.model.durations import human_duration

    def pct(v):
        return "" if v is None else f"{100 * v:.0f}%"

    table = [
        [r["job_id"], str(r["runs"]), pct(r["success_rate"]), r["last_status"] or "active",
         human_duration(r["p50_s"]), human_duration(r["p95_s"]), human_duration(r["max_s"])]
        for r in rows
    ]
    sys.stdout.write(render(["JOB", "RUNS", "SUCCESS", "LAST", "P50", "P95", "MAX"], table))
    return 0
