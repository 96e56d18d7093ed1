"""taro log [PATTERN...] [-n N] [-f]: the unified event log (runtools.eventlog), oldest first.

Needs `[eventlog] enabled = true` in runtools.toml. `-f` goes on with the environment's live
events (pushed, as `taro listen`) after the last logged one.
"""

from __future__ import annotations

import sys

from runtools.cli.views import add_common, add_patterns, env_of

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse
    from typing import Any

HELP = "the unified event log (JSON lines of every lifecycle event; -f follows)"


def configure(p: argparse.ArgumentParser) -> None:
    add_common(p)
    add_patterns(p)
    p.add_argument("-n", "--lines", type=int, metavar="N", help="only the last N matching events")
    p.add_argument("-f", "--follow", action="store_true", help="then print new events as they happen")
    p.add_argument("--timeout", metavar="DUR", help="with -f: stop after DUR")


def _match(matcher: Any, doc: dict[str, Any]) -> bool:
    if matcher.all:
        return True
    from runtools.model.run import RunRecord

    r = RunRecord(job_id=doc.get("job_id") or "", run_id=doc.get("run_id") or "", created_at=0.0,
                  tags=list((doc.get("run") or {}).get("tags") or []))
    return bool(matcher(r))


def line(doc: dict[str, Any]) -> str:
    from runtools.model.text import printable

    ts = str(doc.get("timestamp") or "")
    what = doc.get("status") or doc.get("state") or doc.get("stage") or ""
    detail = doc.get("detail") or {}
    extra = "  " + " ".join(f"{k}={v}" for k, v in detail.items() if v is not None) if detail else ""
    return printable(f"{ts}  {doc.get('instance_id')}  {doc.get('event', ''):<9}  {what}{extra}")


def run(args: argparse.Namespace) -> int:
    from runtools.config import load
    from runtools.errors import UsageError
    from runtools.eventlog import log_path, read
    from runtools.model.criteria import RunMatcher
    from runtools.model.durations import parse_duration

    matcher = RunMatcher.parse(args.patterns)
    n = args.lines
    if n is not None and n < 0:
        raise UsageError("--lines must be 0 or more")
    timeout = parse_duration(args.timeout, "--timeout") if args.timeout else None
    cfg = load()
    from runtools.cli.common import print_ndjson

    def out(doc: dict[str, Any]) -> None:
        if args.json:
            print_ndjson(doc)
        else:
            sys.stdout.write(line(doc) + "\n")

    with env_of(args) as env:
        path = log_path(env, cfg)
        import os

        if not cfg.get("eventlog", "enabled") and not os.path.exists(path):
            sys.stderr.write("taro: the event log is off: set [eventlog] enabled = true in runtools.toml "
                             "(see `taro config show`)\n")
        sub = None
        if args.follow:  # subscribe before reading: nothing falls in between
            from runtools.cli.watch import Watch

            sub = Watch(env, matcher)
            sub.__enter__()
        try:
            docs = [d for d in read(path) if _match(matcher, d)]
            if n is not None:
                docs = docs[-n:] if n else []
            seen = {(d.get("instance_id"), d.get("event"), d.get("timestamp")) for d in docs[-1000:]}
            for d in docs:
                out(d)
            sys.stdout.flush()
            if sub is None:
                return 0
            import time

            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                ev = sub.next(deadline)
                if ev is None:
                    return 0
                doc = ev.to_json()
                if (doc["instance_id"], doc["event"], doc["timestamp"]) in seen:
                    continue
                out(doc)
                sys.stdout.flush()
        finally:
            if sub is not None:
                sub.__exit__(None, None, None)
