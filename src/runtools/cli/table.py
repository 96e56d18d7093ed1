"""Plain text tables for people (fast to import; no colours when not a terminal)."""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


def local_time(ts: float | None, today_short: bool = True) -> str:
    """Local time for people; just the clock when it is today (and `today_short`)."""
    if ts is None:
        return ""
    t = time.localtime(ts)
    if today_short and t[:3] == time.localtime()[:3]:
        return time.strftime("%H:%M:%S", t)
    return time.strftime("%Y-%m-%d %H:%M:%S", t)


def render(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned; every cell made printable (user text cannot paint the terminal)."""
    if not rows:
        return ""
    from runtools.model.text import printable

    rows = [[printable(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    term = _term_width()
    lines = []
    for row in [list(headers), *[list(r) for r in rows]]:
        parts = [c.ljust(widths[i]) for i, c in enumerate(row[:-1])]
        line = "  ".join([*parts, row[-1]])
        if term and len(line) > term:
            line = line[: term - 1] + "…"
        lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


def _term_width() -> int | None:
    if not sys.stdout.isatty():
        return None
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except OSError:
        return None
