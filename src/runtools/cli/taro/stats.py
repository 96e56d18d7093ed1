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
    p.add_argument("--days", type=int, metavar="N", help="one row per job and day (local time) for the last N days")


def run(args: argparse.Namespace) -> int:
    from runtools.env.base import RunQuery
    from runtools.model.criteria import RunMatcher
    from runtools.model.durations import iso, parse_instant

    q = RunQuery(matcher=RunMatcher.parse(args.patterns),
                 since=parse_instant(args.since, "--since") if args.since else None)
    if args.days is not None:
        return _per_day(args, q)
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


def _per_day(args: argparse.Namespace, q) -> int:
    """Per job and local day: runs, success rate, p50/p95/max duration (the last N days)."""
    import time

    from runtools.errors import UsageError
    from runtools.model.stats import job_stats

    days = args.days
    if not 1 <= days <= 3660:
        raise UsageError(f"--days must be from 1 to 3660, not {days}")
    t = time.localtime()
    midnight = time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))
    start = time.mktime((*time.localtime(midnight - (days - 1) * 86400)[:3], 0, 0, 0, 0, 0, -1))
    q.since = max(q.since or start, start)
    q.active = False
    with env_of(args) as env:
        runs = env.find_runs(q)
    by_day: dict[str, list] = {}
    for r in runs:
        by_day.setdefault(time.strftime("%Y-%m-%d", time.localtime(r.created_at)), []).append(r)
    rows = []
    for day in sorted(by_day, reverse=True):
        for row in job_stats(by_day[day]):
            rows.append({"day": day, **{k: row[k] for k in ("job_id", "runs", "succeeded", "failed", "success_rate",
                                                             "p50_s", "p95_s", "max_s")}})
    if args.json:
        from runtools.cli.common import print_json

        print_json(rows)
        return 0
    from runtools.cli.table import render
    from runtools.model.durations import human_duration

    def pct(v: float | None) -> str:
        return "" if v is None else f"{100 * v:.0f}%"

    table = [[r["day"], r["job_id"], str(r["runs"]), pct(r["success_rate"]), human_duration(r["p50_s"]),
              human_duration(r["p95_s"]), human_duration(r["max_s"])] for r in rows]
    sys.stdout.write(render(["DAY", "JOB", "RUNS", "SUCCESS", "P50", "P95", "MAX"], table))
    return 0
