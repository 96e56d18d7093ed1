"""taro stop: stop matching runs (STOPPED, or INTERRUPTED with --interrupt)."""

from __future__ import annotations

import getpass
import os
import sys

from runtools.cli.views import add_common, add_patterns, env_of

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse

HELP = "stop matching runs: STOPPED (--interrupt: INTERRUPTED); queued/pending runs end CANCELLED"


def configure(p: argparse.ArgumentParser) -> None:
    add_common(p, json=False)
    add_patterns(p, nargs="+")
    p.add_argument("--interrupt", action="store_true", help="end INTERRUPTED (a failure) instead of STOPPED")
    p.add_argument("-f", "--force", action="store_true", help="do not ask before stopping more than one run")


def who() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return f"{user} (taro, pid {os.getpid()})"


def run(args: argparse.Namespace) -> int:
    from runtools.errors import NotFoundError
    from runtools.model.criteria import RunMatcher

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
            try:
                resp = env.control(r.instance_id, {"op": "stop", "interrupt": args.interrupt, "by": who()})
            except NotFoundError as e:
                sys.stderr.write(f"taro: {e}\n")
                failed += 1
                continue
            if not resp.get("ok"):
                sys.stderr.write(f"taro: {r.instance_id}: {resp.get('error')}\n")
                failed += 1
            else:
                sys.stdout.write(f"{'interrupting' if args.interrupt else 'stopping'} {r.instance_id}\n")
    return 1 if failed else 0
