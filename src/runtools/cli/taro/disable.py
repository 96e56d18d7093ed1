"""taro disable | enable | list-disabled: runs of a disabled job end DISABLED without executing."""

from __future__ import annotations

import sys

from runtools.cli.views import add_common, env_of
from runtools.model.text import printable

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse

MULTI = True
HELP = "disable jobs: their runs end DISABLED without executing"
HELPS = {
    "disable": "disable jobs matching PATTERN: their runs end DISABLED (recorded in history)",
    "enable": "enable jobs disabled with these exact patterns again",
    "list-disabled": "list disabled job patterns (also: taro config list-disabled)",
}


def configure(p: argparse.ArgumentParser, verb: str) -> None:
    add_common(p, json=verb == "list-disabled")
    if verb != "list-disabled":
        p.add_argument("patterns", nargs="+", metavar="PATTERN",
                       help="job id, JOB@RUN or tag; shell globs; ! negates")


def disabled_list(env) -> list[dict]:
    from runtools.job.coordination import DISABLED
    from runtools.model.durations import iso

    items = env.read_settings(DISABLED)
    return [{"pattern": k, "disabled_at": iso(v.get("at")), "by": v.get("by"), "_at": v.get("at")}
            for k, v in items.items()]


def print_disabled(items: list[dict], as_json: bool) -> None:
    if as_json:
        from runtools.cli.common import print_json

        print_json([{k: v for k, v in i.items() if not k.startswith("_")} for i in items])
        return
    from runtools.cli.table import local_time, render

    rows = [[i["pattern"], local_time(i["_at"], today_short=False), i["by"] or ""] for i in items]
    sys.stdout.write(render(["PATTERN", "DISABLED AT", "BY"], rows))


def run(args: argparse.Namespace) -> int:
    if args.verb == "list-disabled":
        with env_of(args) as env:
            print_disabled(disabled_list(env), args.json)
        return 0

    import time

    from runtools.cli.taro.stop import who
    from runtools.errors import NotFoundError
    from runtools.job.coordination import DISABLED
    from runtools.model.criteria import RunMatcher

    for p in args.patterns:
        RunMatcher.parse(p)  # UsageError on a malformed pattern, before anything is written
    missing = []
    with env_of(args, create_default=args.verb == "disable") as env, env.transaction() as tx:
        for p in args.patterns:
            if args.verb == "disable":
                if tx.get_setting(DISABLED, p) is None:
                    tx.put_setting(DISABLED, p, {"by": who(), "at": time.time()})
            elif tx.get_setting(DISABLED, p) is None:
                missing.append(p)
            else:
                tx.put_setting(DISABLED, p, None)
    for p in args.patterns:
        if p not in missing:
            sys.stdout.write(f"{args.verb}d {printable(p)}\n")
    if missing:
        raise NotFoundError(f"not disabled: {' '.join(missing)} (see `taro list-disabled`)")
    return 0
