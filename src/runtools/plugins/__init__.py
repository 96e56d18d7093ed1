"""Plugins: Python entry points in group `runtools.plugins` (docs/operations.md "Plugins").

An entry point names an object (a class is instantiated without arguments) with any of:

    on_created(run: dict)                  the run exists (CREATED)
    on_state_changed(run: dict, event: str)   pending, queued, waiting, executing, ...
    on_ended(run: dict)                    the run ended (its status is final)
    on_warning(run: dict, warning: str)    a warning was recorded on the run

`run` is the run's public JSON object (docs/json.md). Hooks are called from a worker thread of
the wrapper, each bounded by `[plugins] timeout` (default 2s): a hook that raises or hangs is
reported once on stderr and in the run's warnings, and that plugin is skipped for the rest of
the run. Nothing a plugin does changes the run's status or exit code.

Plugins are loaded only with `[plugins] enabled = true` (optionally `only = ["name", ...]`):
finding entry points scans every installed distribution, so the result is cached in
$XDG_CACHE_HOME/runtools/ keyed by the mtimes of the sys.path directories.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

GROUP = "runtools.plugins"
HOOKS = ("on_created", "on_state_changed", "on_ended", "on_warning")


def discover(fresh: bool = False) -> list[tuple[str, str, str]]:
    """[(name, "module:attr", distribution)] of the installed entry points (cached unless fresh)."""
    key = _cache_key()
    path = _cache_path(key)
    if not fresh:
        try:
            import json

            with open(path, encoding="utf-8") as f:
                return [tuple(x) for x in json.load(f)]
        except (OSError, ValueError):
            pass
    from importlib.metadata import entry_points

    found = []
    for ep in entry_points(group=GROUP):
        dist = getattr(getattr(ep, "dist", None), "name", "") or ""
        found.append((ep.name, ep.value, dist))
    found.sort()
    try:
        import json

        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(found, f)
        os.replace(tmp, path)
    except OSError:
        pass
    return found


def _cache_key() -> str:
    import hashlib

    h = hashlib.sha256()
    for p in sys.path:
        try:
            h.update(f"{p}\0{os.stat(p or '.').st_mtime_ns}\0".encode())
        except OSError:
            h.update(f"{p}\0-\0".encode())
    return h.hexdigest()[:24]


def _cache_path(key: str) -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "runtools", f"plugins-{key}.json")


def load_one(value: str) -> Any:
    """The plugin object of an entry point value `module:attr` (a class is instantiated)."""
    import importlib

    module, _, attr = value.partition(":")
    obj: Any = importlib.import_module(module.strip())
    for part in attr.strip().split(".") if attr.strip() else ():
        obj = getattr(obj, part)
    if isinstance(obj, type):
        obj = obj()
    if not any(callable(getattr(obj, h, None)) for h in HOOKS):
        raise TypeError(f"has none of the hooks {', '.join(HOOKS)}")
    return obj
