"""taro listen: stream lifecycle events as they happen."""

from __future__ import annotations

import sys

from runtools.cli.views import add_common, add_patterns, env_of

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse

HELP = "stream lifecycle events of matching runs as they happen (--json: NDJSON)"


def configure(p: argparse.ArgumentParser) -> None:
    add_common(p)
    add_patterns(p)
    p.add_argument("--timeout", metavar="DUR", help="stop listening after DUR")


def run(args: argparse.Namespace) -> int:
    from runtools.cli.common import print_ndjson
    from runtools.cli.watch import event_line, events
    from runtools.model.criteria import RunMatcher
    from runtools.model.durations import parse_duration

    timeout = parse_duration(args.timeout, "--timeout") if args.timeout else None
    with env_of(args) as env:
        for ev in events(env, RunMatcher.parse(args.patterns), timeout):
            if args.json:
                print_ndjson(ev.to_json())
            else:
                sys.stdout.write(event_line(ev) + "\n")
                sys.stdout.flush()
    return 0
