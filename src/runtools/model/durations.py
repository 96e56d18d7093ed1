"""Durations (`90`, `1.5s`, `500ms`, `10m`, `1h30m`, `2d`) and instants for filters."""

from __future__ import annotations

import os

from runtools.errors import UsageError

_UNIT = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
# The longest duration accepted anywhere (100 years): beyond it a value is a typo, and the
# arithmetic of deadlines and dates would overflow. 0 or no option means "no limit".
MAX_DURATION_S = 100 * 365 * 86400
# The longest single blocking wait (epoll, select, Event.wait): the kernel and the C APIs take
# at most ~24.8 days in milliseconds. Longer waits are sliced and the deadline re-checked.
MAX_WAIT_S = 86400.0


def wait_slice(remaining: float | None) -> float | None:
    """A timeout safe to hand to any blocking call: `remaining` capped at MAX_WAIT_S, never
    negative; None (wait forever) becomes MAX_WAIT_S too, so callers loop and re-check."""
    if remaining is None:
        return MAX_WAIT_S
    return min(max(0.0, remaining), MAX_WAIT_S)


def env_seconds(var: str, default: float, least: float = 0.0, most: float | None = None) -> float:
    """$VAR in seconds (`default` when unset or empty). Anything else than a number from `least`
    to `most` (NaN and inf never are) is one UsageError naming the variable, its range when it
    has one, and the default as the example."""
    raw = os.environ.get(var)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not least <= value <= (1e9 if most is None else most):
        span = "" if most is None else f" from {least:g} to {most:g}"
        raise UsageError(f"invalid ${var} {raw!r}: use seconds{span}, e.g. {default:g}")
    return value


def parse_duration(text: str | float, what: str = "duration") -> float:
    """Seconds from `text`; a bare number means seconds. Raises UsageError on anything else."""
    s = str(text).strip().lower()
    try:
        value = float(s)
    except ValueError:
        import re

        pos, total = 0, 0.0
        for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|sec|min|s|m|h|d)", s):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNIT[m.group(2)]
            pos = m.end()
        if pos != len(s) or not s:
            raise UsageError(
                f"invalid {what} {text!r}: use seconds or a number with ms/s/m/h/d, e.g. 90, 1.5s, 10m, 1h30m"
            ) from None
        value = total
    if value < 0 or value != value or value == float("inf"):
        raise UsageError(f"invalid {what} {text!r}: must be a finite, non-negative number")
    if value > MAX_DURATION_S:
        raise UsageError(f"invalid {what} {text!r}: at most 100 years (36500d)")
    return value


def parse_instant(text: str, what: str = "time", now: object = None) -> float:
    """Epoch seconds from ISO 8601 (naive = local time), `today`, `yesterday`, or an age like `2h` (= 2h ago)."""
    from datetime import datetime, timedelta

    s = text.strip()
    now_dt = now if isinstance(now, datetime) else datetime.now().astimezone()
    midnight = now_dt.replace(hour=0, minute=0, second=0, microsecond=0)
    if s.lower() == "today":
        return midnight.timestamp()
    if s.lower() == "yesterday":
        return (midnight - timedelta(days=1)).timestamp()
    try:
        return iso_to_epoch(s)
    except ValueError:
        try:
            return now_dt.timestamp() - parse_duration(s)
        except UsageError:
            raise UsageError(
                f"invalid {what} {text!r}: use ISO 8601 (2026-01-01, 2026-01-01T12:00:00+02:00) or an age like 2h"
            ) from None


def iso_to_epoch(text: str) -> float:
    """Epoch seconds of an ISO 8601 date or time; naive means local time. ValueError if invalid."""
    from datetime import datetime

    dt = datetime.fromisoformat(text.strip())
    if dt.tzinfo is None:
        dt = dt.astimezone()  # naive means local time
    return dt.timestamp()


def iso(ts: float | None) -> str | None:
    """ISO 8601 with offset, in local time, millisecond precision; None stays None."""
    if ts is None:
        return None
    from datetime import datetime

    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="milliseconds")


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    m, s = divmod(int(seconds), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"
