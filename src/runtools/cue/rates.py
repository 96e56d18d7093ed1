"""Rate strings and the sliding window that enforces them.

A window of `count` starts per `period` seconds allows a burst of its full
count, and never more than `count` starts in any interval of `period` seconds.
"""

from __future__ import annotations

import re
from collections import deque

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
}
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*([A-Za-z]+)\s*$")


_UNITS_TEXT = "s|sec|second, m|min|minute or h|hr|hour, e.g. '60/min'"


def parse_rate(rate: str) -> tuple[int, float]:
    """Turn ``"60/min"`` into ``(60, 60.0)``; raise ValueError naming the bad string.

    The messages start with the original runcue's words ("Invalid rate format: ...",
    "Unknown rate unit: ...") so code matching on them keeps working, then say more."""
    match = _RATE_RE.match(rate) if isinstance(rate, str) else None
    if match is None:
        raise ValueError(f"Invalid rate format: {rate}. Use '<count>/<unit>' with unit {_UNITS_TEXT}")
    unit = match.group(2).lower()
    if unit not in _UNITS:
        raise ValueError(f"Unknown rate unit: {match.group(2)} (in rate {rate!r}). Use {_UNITS_TEXT}")
    count = int(match.group(1))
    if count < 1:
        raise ValueError(f"Invalid rate format: {rate}. The count must be at least 1")
    return count, _UNITS[unit]


class RateWindow:
    """A sliding log of start times: O(1) amortized per check, exact in every window."""

    __slots__ = ("count", "period", "starts")
    shared = False  # runtools.cue.shared.SharedRate stands in for a window shared through an environment

    def __init__(self, count: int, period: float) -> None:
        self.count = count
        self.period = period
        self.starts: deque[float] = deque()

    def _prune(self, now: float) -> None:
        starts, period = self.starts, self.period
        # `s + period <= now`, not `s <= now - period`: the same sum as next_free(), so a start
        # kept here always makes next_free() later than now (no float rounding in between)
        while starts and starts[0] + period <= now:
            starts.popleft()

    def available(self, now: float) -> bool:
        """Whether a start at `now` stays within the limit."""
        self._prune(now)
        return len(self.starts) < self.count

    def record(self, now: float) -> None:
        """Count a start at `now`."""
        self.starts.append(now)

    def next_free(self, now: float) -> float:
        """The earliest time at which another start is allowed."""
        self._prune(now)
        if len(self.starts) < self.count:
            return now
        return self.starts[-self.count] + self.period

    def used(self, now: float) -> int:
        """Starts inside the current window."""
        self._prune(now)
        return len(self.starts)
