"""taro release | approve | resume | deny: let PENDING runs through their gate, or end them DENIED."""

from __future__ import annotations

import sys

from runtools.cli.views import add_common, add_patterns, env_of

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse

MULTI = True
HELP = "let pending runs through their gate, or deny them"
HELPS = {
    "release": "release every run pending on LATCH (run job --pending LATCH)",
    "approve": "let matching runs through their gate (--approval NAME or --pending LATCH)",
    "resume": "same as approve",
    "deny": "end matching pending runs DENIED (they never execute)",
}


def configure(p: argparse.ArgumentParser, verb: str) -> None:
    add_common(p, json=False)
    if verb == "release":
        p.add_argument("latch", metavar="LATCH", help="the latch given to run job --pending")
        p.add_argument("patterns", nargs="*", metavar="PATTERN", help="only runs matching these patterns")
    else:
        add_patterns(p, nargs="+")
    if verb == "deny":
        p.add_argument("--reason", metavar="TEXT", help="why; recorded on the run and shown by taro history")


def _gated(r, latch: str | None) -> bool:
    c = r.coord
    if latch is not None:
        return c.get("latch") == latch and not c.get("latch_passed")
    return bool((c.get("latch") and not c.get("latch_passed")) or (c.get("approval") and not c.get("approval_passed")))


def run(args: argparse.Namespace) -> int:
    from runtools.cli.taro.stop import who
    from runtools.errors import NotFoundError
    from runtools.model.criteria import RunMatcher

    verb = args.verb
    latch = args.latch if verb == "release" else None
    matcher = RunMatcher.parse(args.patterns)
    request = {"op": verb, "by": who()}
    if latch is not None:
        request["latch"] = latch
    if getattr(args, "reason", None):
        request["reason"] = args.reason
    with env_of(args) as env:
        runs = [r for r in env.active_runs(matcher) if _gated(r, latch)]
        if not runs:
            what = f"on latch {latch}" if latch is not None else f"matching {' '.join(args.patterns)}"
            raise NotFoundError(f"no run is pending {what}: see `taro ps`")
        done = failed = 0
        for r in runs:
            resp = _send(env, r, request)
            if resp is None:
                continue  # it ended meanwhile
            if resp.get("ok"):
                done += 1
                sys.stdout.write(f"{resp.get('action', verb)} {r.instance_id}\n")
            else:
                failed += 1
                from runtools.cli.common import say

                say(f"taro: {r.instance_id}: {resp.get('error')}")
    if not done and not failed:
        raise NotFoundError("the matching runs ended before they could be reached")
    return 1 if failed else 0


def _send(env, run, request):
    """Deliver `request` to the live run; None if the run ended without taking it.

    A run created a moment ago may not serve control yet: then wait for its next event. A run
    that acts on the request may end (DENIED) before its answer reaches us: then its record,
    which names us in its actions, is the answer."""
    import time

    from runtools.errors import NotFoundError

    iid = run.instance_id
    deadline = time.monotonic() + 5.0
    with env.subscribe() as sub:
        while True:
            try:
                return env.control(iid, request)
            except NotFoundError:
                pass
            current = env.get_run(iid)
            mine = [a for a in (current.actions if current else []) if a.get("by") == request["by"]]
            if mine:
                return {"ok": True, "action": mine[-1].get("action")}
            if current is None or not current.active:
                return None
            while (left := deadline - time.monotonic()) > 0:
                ev = sub.get(left)
                if ev is not None and ev.run.instance_id == iid:
                    break
            else:
                return {"ok": False, "error": "does not answer control requests (is its wrapper alive?)"}
