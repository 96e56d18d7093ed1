"""Event streams for `taro wait` and `taro listen`: pushed events, plus lease watches so that a
run whose wrapper was killed still produces its LOST end event (no polling)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from runtools.env.base import Environment
from runtools.model.criteria import RunMatcher
from runtools.model.events import Event


def events(
    env: Environment, matcher: RunMatcher, timeout: float | None = None, current: bool = False
) -> Iterator[Event]:
    """Matching events as they happen; ends when `timeout` passes. With `current`, first one
    `current` event per matching active run (taken after subscribing: nothing falls in between)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    watched: set[str] = set()
    lock = threading.Lock()
    with env.subscribe() as sub:

        def reap_on_death(run) -> None:
            env.wait_lease(run, None)
            try:
                env.active_runs()  # publishes the LOST end event if the run died
            except Exception:
                pass

        def watch(run) -> None:
            with lock:
                if run.instance_id in watched:
                    return
                watched.add(run.instance_id)
            threading.Thread(target=reap_on_death, args=(run,), daemon=True).start()

        for r in env.active_runs(matcher):
            watch(r)
            if current:
                yield Event("current", r)
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            ev = sub.get(remaining)
            if ev is None or not matcher(ev.run):
                continue
            if ev.run.active:
                watch(ev.run)
            yield ev


def event_line(ev: Event) -> str:
    from datetime import datetime

    r = ev.run
    ts = datetime.fromtimestamp(ev.timestamp).strftime("%H:%M:%S.%f")[:-3]
    what = r.status.value if not r.active and r.status else (r.detail or (r.state.value if r.state else r.stage.value))
    extra = ""
    if ev.detail:
        extra = "  " + " ".join(f"{k}={v}" for k, v in ev.detail.items() if v is not None)
    if ev.event == "ended" and r.exit_code is not None:
        extra += f"  exit={r.exit_code}"
    return f"{ts}  {r.instance_id}  {ev.event:<9}  {what}{extra}"
