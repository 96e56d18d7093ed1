"""Progress from output lines: `key=[value]` or `key=value` for event, completed, total, unit, result."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

KEYS = ("event", "completed", "total", "unit", "result")
_KEYS_B = tuple(k.encode() + b"=" for k in KEYS)
_PAIR = None  # compiled on the first line that could carry progress: `re` is not free to import


def _pair():
    global _PAIR
    if _PAIR is None:
        import re

        _PAIR = re.compile(rb"(?<![\w-])(event|completed|total|unit|result)=(?:\[([^\]\n]*)\]|([^\s\[\]]+))")
    return _PAIR


def _num(v: str) -> Any:
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v else f


def parse_progress(line: bytes) -> dict[str, Any] | None:
    """The progress pairs on one line, or None when it has none."""
    if b"=" not in line or not any(k in line for k in _KEYS_B):
        return None
    found: dict[str, Any] = {}
    for m in _pair().finditer(line):
        key = m.group(1).decode()
        raw = (m.group(2) if m.group(2) is not None else m.group(3)).decode("utf-8", "replace").strip()
        found[key] = _num(raw) if key in ("completed", "total") else raw
    return found or None


def format_progress(p: dict[str, Any] | None) -> str:
    if not p:
        return ""
    parts = []
    if p.get("event"):
        parts.append(str(p["event"]))
    if p.get("completed") is not None or p.get("total") is not None:
        done = p.get("completed", "?")
        total = p.get("total")
        unit = f" {p['unit']}" if p.get("unit") else ""
        frac = f"{done}/{total}{unit}" if total is not None else f"{done}{unit}"
        if isinstance(done, int | float) and isinstance(total, int | float) and total:
            frac += f" ({100 * done / total:.0f}%)"
        parts.append(frac)
    if p.get("result"):
        parts.append(f"result: {p['result']}")
    return " ".join(parts)
