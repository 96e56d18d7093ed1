"""taro clean [PATTERN...] --older-than DUR | --keep N [--dry-run]: remove ended runs and their
output files (never active ones). See runtools.retention and docs/operations.md."""

from __future__ import annotations

import sys

from runtools.cli.views import add_common, add_patterns, env_of

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse

HELP = "remove ended runs and their output: --older-than DUR and/or --keep N per job (--dry-run first)"


def configure(p: argparse.ArgumentParser) -> None:
    add_common(p)
    add_patterns(p)
    p.add_argument("--older-than", metavar="DUR", help="runs that ended more than DUR ago (30d, 12h, ...)")
    p.add_argument("--keep", type=int, metavar="N", help="keep the newest N ended runs of each job, remove the rest")
    p.add_argument("-n", "--dry-run", action="store_true", help="print what would be removed; remove nothing")
    p.add_argument("--vacuum", action="store_true", help="give the space back now (SQLite VACUUM)")


def run(args: argparse.Namespace) -> int:
    from runtools.errors import UsageError
    from runtools.model.durations import parse_duration

    if args.older_than is None and args.keep is None:
        raise UsageError("say what to remove: --older-than DUR and/or --keep N (add --dry-run to look first)")
    older = parse_duration(args.older_than, "--older-than") if args.older_than is not None else None
    keep = args.keep
    if keep is not None and not 0 <= keep <= 10**9:
        raise UsageError(f"--keep must be from 0 to 1000000000, not {keep}")
    from runtools.model.criteria import RunMatcher

    RunMatcher.parse(args.patterns)  # a bad pattern is a usage error before anything is removed
    from runtools.config import load
    from runtools.retention import clean, vacuum

    cfg = load()
    with env_of(args) as env:
        removed = clean(env, args.patterns, older, keep, dry_run=args.dry_run)
        vacuumed = False
        if not args.dry_run:
            vacuumed = vacuum(env, str(cfg.get("retention", "vacuum")), manual=True, force=args.vacuum)
    if args.json:
        from runtools.cli.common import print_json

        print_json({"dry_run": args.dry_run, "removed": len(removed), "vacuumed": vacuumed,
                    "runs": [{"instance_id": r.instance_id, "status": r.status.value if r.status else None,
                              "created_at": r.to_json()["created_at"],
                              "output_files": [p for p in (r.stdout_path, r.stderr_path) if p]}
                             for r in removed]})
        return 0
    from runtools.cli.table import local_time

    verb = "would remove" if args.dry_run else "removed"
    for r in removed:
        status = r.status.value if r.status else ""
        sys.stdout.write(f"{verb} {r.instance_id}  {status}  {local_time(r.created_at, today_short=False)}\n")
    tail = " (dry run: nothing removed)" if args.dry_run else (" and vacuumed" if vacuumed else "")
    sys.stdout.write(f"{verb} {len(removed)} run{'s' if len(removed) != 1 else ''}{tail}\n")
    return 0
