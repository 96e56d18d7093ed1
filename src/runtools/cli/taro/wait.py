"""taro wait: block until a matching run reaches a state (default: ends)."""

from __future__ import annotations

import sys

from runtools.cli.views import add_common, env_of

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse

HELP = "wait until a matching run reaches STATE (default: ended); exit 0, or 124 on --timeout"

_STAGES = {"ended", "created", "running"}
_STATES = {"pending", "queued", "waiting", "executing"}


def configure(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("args", nargs="*", metavar="PATTERN|STATE",
                   help="run patterns, and optionally a state: ended (default), a status (completed, failed, "
                        "...), an outcome (success, fault, ...), or pending/queued/waiting/executing")
    p.add_argument("--timeout", metavar="DUR", help="give up after DUR (exit 124)")


def _is_state(word: str) -> bool:
    from runtools.model.status import Outcome, Status

    w = word.upper()
    return word.lower() in _STAGES | _STATES or w in Status.__members__ or w in Outcome.__members__


def reached(ev, state: str) -> bool:
    r = ev.run
    s = state.upper()
    if state in ("ended",):
        return not r.active
    if state == "created":
        return ev.event == "created"
    if state == "running":
        return r.active and r.state is not None
    if state in _STATES:
        return r.active and r.state is not None and r.state.value == s
    if r.active or r.status is None:
        return False
    return r.status.value == s or r.status.outcome.value == s


def run(args: argparse.Namespace) -> int:
    from runtools.cli.watch import event_line, events
    from runtools.errors import UsageError
    from runtools.model.criteria import RunMatcher
    from runtools.model.durations import parse_duration

    states = [a for a in args.args if _is_state(a)]
    patterns = [a for a in args.args if not _is_state(a)]
    if len(states) > 1:
        raise UsageError(f"more than one state given ({', '.join(states)}): wait for one")
    state = states[0].lower() if states else "ended"
    timeout = parse_duration(args.timeout, "--timeout") if args.timeout else None
    matcher = RunMatcher.parse(patterns)
    with env_of(args) as env:
        for ev in events(env, matcher, timeout, current=state in _STATES):  # already QUEUED counts
            if reached(ev, state):
                if args.json:
                    from runtools.cli.common import print_ndjson

                    print_ndjson(ev.to_json())
                else:
                    sys.stdout.write(event_line(ev) + "\n")
                return 0
    sys.stderr.write(f"taro: timed out waiting for {state}\n")
    return 124
