"""taro wait: block until a matching run reaches a state (default: ends).

After subscribing to events (so nothing falls in between), it looks at the runs that already
exist: a run already in STATE answers at once (0); runs that ended without reaching it, with
nothing matching still active, answer at once too (4). Exit codes: 0 reached, 3 no such run
(an exact JOB@RUN that does not exist), 4 the awaited run(s) ended without reaching STATE,
124 --timeout passed.
"""

from __future__ import annotations

import sys

from runtools.cli.views import add_common, env_of

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse

    from runtools.model.events import Event
    from runtools.model.run import RunRecord

HELP = ("wait until a matching run reaches STATE (default: ended); exit 0, 4 if it ended otherwise, "
        "3 no such run, 124 on --timeout")

_STAGES = {"ended", "created", "running"}
_STATES = {"pending", "queued", "waiting", "executing"}
EXIT_REACHED, EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_TIMEOUT = 0, 3, 4, 124


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


def reached(r: RunRecord, state: str) -> bool:
    """Has run `r` (as recorded now) reached `state`? An ended run has reached `ended`,
    `created`, its status and outcome, `running` unless it was refused at creation, and
    `executing` if it executed; it can no longer reach anything else."""
    from runtools.model.status import Stage, Status

    s = state.upper()
    if not r.active:
        if state in ("ended", "created"):
            return True
        if state == "running":
            return r.status is not Status.DISABLED
        if state == "executing":
            return r.started_at is not None
        if state in _STATES or r.status is None:
            return False
        return r.status.value == s or r.status.outcome.value == s
    if state == "created":
        return True
    if state == "running":
        return r.stage is Stage.RUNNING
    if state in _STATES:
        return r.state is not None and r.state.value == s
    return False


def _exact(pattern: str) -> bool:
    """An exact JOB@RUN: a run that does not exist now never will (run ids are new each time)."""
    return "@" in pattern and not any(c in pattern for c in "*?[")


def _answer(args: argparse.Namespace, ev: Event) -> None:
    if args.json:
        from runtools.cli.common import print_ndjson

        print_ndjson(ev.to_json())
    else:
        from runtools.cli.watch import event_line

        sys.stdout.write(event_line(ev) + "\n")
        sys.stdout.flush()


def _unreachable(args: argparse.Namespace, r: RunRecord, state: str) -> int:
    from runtools.model.events import Event

    _answer(args, Event("current", r, r.ended_at))
    status = r.status.value if r.status else "ENDED"
    sys.stderr.write(f"taro: {r.instance_id} ended {status}: it can no longer reach {state.upper()}\n")
    return EXIT_UNREACHABLE


def parse_wait(args: argparse.Namespace) -> tuple[str, list[str], float | None]:
    """`taro wait [PATTERN...] [STATE] [--timeout DUR]` as (state, patterns, timeout seconds);
    shared by the local wait and the wait over `taro -H`."""
    from runtools.errors import UsageError
    from runtools.model.durations import parse_duration

    states = [a for a in args.args if _is_state(a)]
    patterns = [a for a in args.args if not _is_state(a)]
    if len(states) > 1:
        raise UsageError(f"more than one state given ({', '.join(states)}): wait for one")
    state = states[0].lower() if states else "ended"
    timeout = parse_duration(args.timeout, "--timeout") if args.timeout else None
    return state, patterns, timeout


def run(args: argparse.Namespace) -> int:
    import time

    from runtools.cli.watch import Watch
    from runtools.model.criteria import RunMatcher
    from runtools.model.events import Event

    state, patterns, timeout = parse_wait(args)
    deadline = None if timeout is None else time.monotonic() + timeout
    matcher = RunMatcher.parse(patterns)
    with env_of(args) as env, Watch(env, matcher) as w:
        # subscribed first: whatever changes after these reads arrives as an event
        active = w.active()
        ended: list[RunRecord] = []
        if patterns:  # without patterns: the next run of any job to reach STATE
            for p in matcher.include or ("*",):
                m = RunMatcher((p,), matcher.exclude)
                if not any(m(r) for r in active) and (last := w.latest_ended(m)) is not None:
                    ended.append(last)
        for r in (*active, *ended):
            if reached(r, state):
                _answer(args, Event("current", r, r.ended_at if not r.active else None))
                return EXIT_REACHED
        tracked = {r.instance_id for r in active}
        if ended and not tracked:
            return _unreachable(args, ended[0], state)
        if not ended and not tracked and matcher.include and all(_exact(p) for p in matcher.include):
            sys.stderr.write(f"taro: no run {' '.join(matcher.include)}: see `taro history`\n")
            return EXIT_NOT_FOUND
        while (ev := w.next(deadline)) is not None:
            r = ev.run
            if reached(r, state):
                _answer(args, ev)
                return EXIT_REACHED
            if r.active:
                if tracked:
                    tracked.add(r.instance_id)
            elif r.instance_id in tracked:
                tracked.discard(r.instance_id)
                if not tracked:  # every run it waited for ended without reaching STATE
                    return _unreachable(args, r, state)
    sys.stderr.write(f"taro: timed out waiting for {state}\n")
    return EXIT_TIMEOUT
