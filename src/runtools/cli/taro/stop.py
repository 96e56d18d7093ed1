"""taro stop: stop matching runs (STOPPED, or INTERRUPTED with --interrupt)."""

from __future__ import annotations

import getpass
import os
import sys

from runtools.cli.common import say
from runtools.cli.views import add_common, add_patterns, env_of

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse

HELP = ("stop matching runs: STOPPED (--interrupt: INTERRUPTED); queued/pending runs end CANCELLED; "
        "a run whose wrapper was killed: its command's process group is signalled")


def configure(p: argparse.ArgumentParser) -> None:
    add_common(p, json=False)
    add_patterns(p, nargs="+")
    p.add_argument("--interrupt", action="store_true", help="end INTERRUPTED (a failure) instead of STOPPED")
    p.add_argument("-f", "--force", action="store_true", help="do not ask before stopping more than one run")
    p.add_argument("--kill-after", metavar="DUR",
                   help="a run whose wrapper is gone: KILL its command's group DUR after TERM (default 10s)")


def who() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return f"{user} (taro, pid {os.getpid()})"


def run(args: argparse.Namespace) -> int:
    from runtools.errors import NotFoundError
    from runtools.model.criteria import RunMatcher
    from runtools.model.durations import parse_duration

    grace = 10.0 if args.kill_after is None else parse_duration(args.kill_after, "--kill-after")
    with env_of(args) as env:
        runs = env.active_runs(RunMatcher.parse(args.patterns))
        if not runs:
            raise NotFoundError(f"no active run matches {' '.join(args.patterns)}: see `taro ps`")
        if len(runs) > 1 and not args.force:
            sys.stderr.write("These runs will be stopped:\n")
            for r in runs:
                sys.stderr.write(f"  {r.instance_id}  {r.state.value if r.state else r.stage.value}\n")
            if not sys.stdin.isatty():
                sys.stderr.write("taro: more than one run matches and there is no terminal to ask: use -f\n")
                return 1
            sys.stderr.write("Stop them? [y/N] ")
            sys.stderr.flush()
            if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                return 1
        failed = 0
        for r in runs:
            by = who()
            try:
                resp = env.control(r.instance_id, {"op": "stop", "interrupt": args.interrupt, "by": by})
            except NotFoundError:
                if not _stop_orphan(env, r, args.interrupt, by, grace):
                    failed += 1
                continue
            if not resp.get("ok"):
                say(f"taro: {r.instance_id}: {resp.get('error')}")
                failed += 1
            else:
                sys.stdout.write(f"{'interrupting' if args.interrupt else 'stopping'} {r.instance_id}\n")
    return 1 if failed else 0


def _stop_orphan(env, r, interrupt: bool, by: str, grace: float) -> bool:
    """No control socket answers: the wrapper may be gone while its command runs on (an orphan).
    Then stop the command itself; else say why the run cannot be reached."""
    current = env.get_run(r.instance_id)
    if current is None or not current.active:
        sys.stdout.write(f"{r.instance_id} already ended ({current.status.value if current else 'deleted'})\n")
        return True
    ended = env.stop_orphan(current, interrupt, by, grace)
    if ended is None:
        say(f"taro: {r.instance_id}: no control socket answers, and its command cannot be told "
            f"safely from another process (its wrapper, pid {current.pid}, may be alive: same host "
            "and XDG_RUNTIME_DIR?)")
        return False
    if ended.active:
        say(f"taro: {r.instance_id}: its wrapper was gone; its command's process group was "
            "signalled, but a process that left the group still holds the run")
        return False
    from runtools.model.status import Status

    if ended.status not in (Status.STOPPED, Status.INTERRUPTED):  # its command had ended by itself
        sys.stdout.write(f"{r.instance_id} already ended ({ended.status.value if ended.status else '?'})\n")
        return True
    sys.stdout.write(f"{'interrupted' if interrupt else 'stopped'} {r.instance_id} "
                     "(its wrapper was gone: its command's process group was signalled)\n")
    return True
