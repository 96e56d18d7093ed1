"""Waiting for other runs to end, on pushed events and lease releases (no polling)."""

from __future__ import annotations

import threading
import time

from runtools.env.base import Environment, Subscription
from runtools.model.durations import wait_slice
from runtools.model.run import RunRecord


def watch_lease(env: Environment, run: RunRecord, sub: Subscription) -> threading.Event:
    """Wake `sub` when `run`'s process is gone (it may have died without an end event)."""
    gone = threading.Event()

    def watch() -> None:
        env.wait_lease(run, None)
        gone.set()
        sub.wake()

    threading.Thread(target=watch, daemon=True, name="lease-watch").start()
    return gone


def wait_for_end(env: Environment, run: RunRecord, timeout: float | None = None) -> RunRecord:
    """Block until `run` ended (or `timeout`); returns its latest record."""
    deadline = None if timeout is None else time.monotonic() + timeout
    iid = run.instance_id
    with env.subscribe() as sub:
        gone = watch_lease(env, run, sub)
        while True:
            current = env.get_run(iid)
            if current is None or not current.active:
                return current or run
            if gone.is_set():
                env.active_runs()  # the lease is free: this reaps the run as LOST
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return current
            ev = sub.get(wait_slice(remaining))  # sliced: the loop re-checks the deadline
            if ev is not None and ev.run.instance_id == iid and not ev.run.active:
                return ev.run
