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
    timeout = cfg.duration("plugins", "timeout") or 2.0
    rows: list[dict[str, Any]] = []
    for name, value, dist in discover(fresh=True):
        row = {"name": name, "value": value, "distribution": dist, "loads": True, "error": None,
               "enabled": on and (only is None or name in only), "hooks": []}
        why, obj = _bounded(load_one, value, timeout)
        if why:
            row["loads"], row["error"] = False, why
        else:
            row["hooks"] = [h for h in HOOKS if callable(getattr(obj, h, None))]
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


def _bounded(fn: Any, arg: Any, timeout: float) -> tuple[str | None, Any]:
    """(None, fn(arg)) or (why not, None), waiting at most `timeout` (an import may hang)."""
    import threading

    box: list[Any] = []
    failure: list[str] = []

    def target() -> None:
        try:
            box.append(fn(arg))
        except BaseException as e:
            failure.append(f"{type(e).__name__}: {e}")

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return f"did not load within {timeout:g}s", None
    return (failure[0], None) if failure else (None, box[0])
