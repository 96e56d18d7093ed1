"""Event streams for `taro wait` and `taro listen`: pushed events, plus lease watches so that a
run whose wrapper was killed still produces its LOST end event (no polling)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from runtools.env.base import Environment, RunQuery
from runtools.model.criteria import RunMatcher
from runtools.model.durations import wait_slice
from runtools.model.events import Event
from runtools.model.run import RunRecord


class Watch:
    """A subscription to the events of matching runs, opened before anything is read, so a
    change between a read (`active`, `latest_ended`) and the wait is seen as an event after it."""

    def __init__(self, env: Environment, matcher: RunMatcher) -> None:
        self.env = env
        self.matcher = matcher
        self._watched: set[str] = set()
        self._lock = threading.Lock()
        self._sub = env.subscribe()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sub.close()

    def _reap_on_death(self, run: RunRecord) -> None:
        self.env.wait_lease(run, None)
        try:
            self.env.active_runs()  # publishes the LOST end event if the run died
        except Exception:
            pass

    def watch(self, run: RunRecord) -> None:
        """Make sure the death of `run`'s process becomes an end event."""
        with self._lock:
            if run.instance_id in self._watched:
                return
            self._watched.add(run.instance_id)
        threading.Thread(target=self._reap_on_death, args=(run,), daemon=True).start()

    def active(self) -> list[RunRecord]:
        """Matching active runs now (leases checked), each watched."""
        runs = self.env.active_runs(self.matcher)
        for r in runs:
            self.watch(r)
        return runs

    def latest_ended(self, matcher: RunMatcher) -> RunRecord | None:
        found = self.env.find_runs(RunQuery(matcher=matcher, active=False, limit=1))
        return found[0] if found else None

    def next(self, deadline: float | None) -> Event | None:
        """The next matching event, or None once `deadline` (monotonic) passed."""
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            ev = self._sub.get(wait_slice(remaining))  # sliced: no timeout overflows; loop re-checks
            if ev is None or not self.matcher(ev.run):
                continue
            if ev.run.active:
                self.watch(ev.run)
            return ev


def events(
    env: Environment, matcher: RunMatcher, timeout: float | None = None, current: bool = False
) -> Iterator[Event]:
    """Matching events as they happen; ends when `timeout` passes. With `current`, first one
    `current` event per matching active run (taken after subscribing: nothing falls in between)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with Watch(env, matcher) as w:
        for r in w.active():
            if current:
                yield Event("current", r)
        while True:
            ev = w.next(deadline)
            if ev is None:
                return
            yield ev


def event_line(ev: Event) -> str:
    from datetime import datetime

    r = ev.run
    ts = datetime.fromtimestamp(ev.timestamp).strftime("%H:%M:%S.%f")[:-3]
    what = r.status.value if not r.active and r.status else (r.detail or (r.state.value if r.state else r.stage.value))
    extra = ""
    if ev.detail:
        extra = "  " + " ".join(f"{k}={v}" for k, v in ev.detail.items() if v is not None)
    if ev.event in ("ended", "current") and not r.active and r.exit_code is not None:
        extra += f"  exit={r.exit_code}"
    from runtools.model.text import printable

    return printable(f"{ts}  {r.instance_id}  {ev.event:<9}  {what}{extra}")
