"""taro unlock KEY: let the next strict start of a finished run key run once more."""

from __future__ import annotations

import sys

from runtools.cli.common import print_json
from runtools.cli.views import add_common, env_of

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse

HELP = "allow one more strict run of a finished run key (consumed by the next strict start)"


def configure(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("key", metavar="KEY", help="the run key")
    p.add_argument("--ttl", metavar="DUR", help="the override expires after DUR (e.g. 30m, 2h); default: never")
    p.add_argument("--reason", metavar="TEXT", help="why (recorded with the override and on the next run)")


def run(args: argparse.Namespace) -> int:
    from runtools.cli.taro.stop import who
    from runtools.job.runkey import unlock
    from runtools.model.durations import iso, parse_duration

    ttl = None if args.ttl is None else parse_duration(args.ttl, "--ttl")
    with env_of(args) as env, env.transaction() as tx:
        o = unlock(tx, args.key, ttl, args.reason, who())
    if args.json:
        print_json({"unlocked": True, "run_key": args.key, "reason": o["reason"],
                    "allowed_at": iso(o["allowed_at"]), "expires_at": iso(o["expires_at"])})
    else:
        until = f" until {iso(o['expires_at'])}" if o["expires_at"] is not None else ""
        from runtools.model.text import printable

        sys.stdout.write(f"unlocked {printable(args.key)}: the next strict start runs once more{until}\n")
    return 0
