"""taro plugins: the installed plugins (entry points `runtools.plugins`), whether each loads and
whether runtools.toml enables it. See runtools.plugins and docs/operations.md."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse
    from typing import Any

HELP = "installed plugins (entry points runtools.plugins): loads or not, enabled or not"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON: [{name, value, distribution, loads, error, "
                                                       "enabled, hooks}]")


def run(args: argparse.Namespace) -> int:
    from runtools.config import load
    from runtools.plugins import HOOKS, discover, load_one

    cfg = load()
    on = bool(cfg.get("plugins", "enabled"))
    only = cfg.section("plugins").get("only")
    rows: list[dict[str, Any]] = []
    for name, value, dist in discover(fresh=True):
        row = {"name": name, "value": value, "distribution": dist, "loads": True, "error": None,
               "enabled": on and (only is None or name in only), "hooks": []}
        try:
            obj = load_one(value)
            row["hooks"] = [h for h in HOOKS if callable(getattr(obj, h, None))]
        except Exception as e:
            row["loads"], row["error"] = False, f"{type(e).__name__}: {e}"
        rows.append(row)
    if args.json:
        from runtools.cli.common import print_json

        print_json(rows)
        return 0
    if not rows:
        sys.stdout.write("no plugins installed (entry point group runtools.plugins)\n")
    for r in rows:
        state = "loads" if r["loads"] else f"does not load: {r['error']}"
        enabled = "enabled" if r["enabled"] else "disabled"
        hooks = f" [{', '.join(r['hooks'])}]" if r["hooks"] else ""
        sys.stdout.write(f"{r['name']:<20} {enabled:<8}  {r['value']} ({r['distribution'] or '?'}): {state}{hooks}\n")
    if rows and not on:
        sys.stdout.write("plugins are off: set [plugins] enabled = true in runtools.toml\n")
    return 0
