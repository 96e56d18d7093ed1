"""Phases of a run and the context they run in.

A run is a chain of phases, outer to inner (DESIGN §4): admission phases decide inside the
transaction that creates the run (disabled-check, run-key claim); coordination phases may wait
(gates, queues) or end the run (OVERLAP, DENIED, ...); the execution phase runs the work.
"""

from __future__ import annotations

import _thread
import os
import time
from _queue import Empty, SimpleQueue

from runtools.errors import RuntoolsError
from runtools.model.events import Event
from runtools.model.run import RunRecord
from runtools.model.status import Stage, State, Status

TYPE_CHECKING = False  # keep `typing`, `threading`, `queue`, `dataclasses` off the hot path
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from runtools.env.base import Environment, Tx


class PhaseEnd(RuntoolsError):
    """A phase ended the run before (or instead of) executing."""

    def __init__(self, status: Status, message: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message or status.value)
        self.status = status
        self.run_exit_code = exit_code  # the run's exit code, when the phase decides it


class Admit:
    """Decision of an admission phase: end the run at once, or hand back an existing run."""

    __slots__ = ("end", "existing", "reason")

    def __init__(
        self, end: Status | None = None, existing: RunRecord | None = None, reason: str | None = None
    ) -> None:
        self.end = end
        self.existing = existing
        self.reason = reason


class AdmissionPhase:
    """Decides inside the transaction that inserts the run."""

    name = "admission"

    def admit(self, tx: Tx, run: RunRecord) -> Admit | None:
        raise NotImplementedError


class Phase:
    """A coordination phase: may wait (via `ctx.wait_for`) and may raise PhaseEnd."""

    name = "phase"

    def run(self, ctx: RunContext) -> None:
        raise NotImplementedError

    def control(self, ctx: RunContext, request: dict[str, Any]) -> dict[str, Any] | None:
        """Handle a control request meant for this phase (release, approve, ...); None if not."""
        return None


class ExecutionPhase:
    """Runs the work. Returns (status, exit code)."""

    name = "execution"

    def execute(self, ctx: RunContext) -> tuple[Status, int | None]:
        raise NotImplementedError


class RunContext:
    """What phases see of their run: the record, the environment, and the stop signal."""

    def __init__(self, env: Environment, run: RunRecord) -> None:
        self.env = env
        self.run = run
        self.stop_status: Status | None = None  # set when someone asked the run to stop
        self.stop_exit: int | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._wakeups: SimpleQueue = SimpleQueue()
        self._lock = _thread.RLock()
        self.endpoint: Any = None  # ControlEndpoint once serving
        self.lease: Any = None  # Lease of the run, inherited by its child process
        self._watched: set[str] = set()
        self.on_executing: Callable[[], None] | None = None  # called once the work starts ("longer than usual")

    # -- stopping ------------------------------------------------------------------------------

    @property
    def wake_fd(self) -> int:
        """Readable once the run was asked to stop (for select-based loops)."""
        return self._wake_r

    def request_stop(self, status: Status, exit_code: int | None = None) -> None:
        with self._lock:
            if self.stop_status is None:
                self.stop_status = status
                self.stop_exit = exit_code
        self.wake("stop")
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def wake(self, why: str = "") -> None:
        self._wakeups.put(why)

    def close(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    # -- recording -----------------------------------------------------------------------------

    def save(self, event: str | None = None, detail: dict[str, Any] | None = None) -> None:
        """Write the record and push `event` (if given) to listeners."""
        with self._lock:
            with self.env.transaction() as tx:
                tx.update(self.run)
            snapshot = self.run.copy()
        if event:
            self.env.publish(Event(event, snapshot, detail=detail))

    def set_state(self, state: State, detail: str | None = None, event: str | None = None) -> None:
        with self._lock:
            changed = self.run.state is not state or self.run.detail != detail
            self.run.stage = Stage.RUNNING
            self.run.state = state
            self.run.detail = detail
        if changed:
            self.save(event or state.value.lower())
            if state is State.EXECUTING and self.on_executing is not None:
                self.on_executing()

    def add_warning(self, text: str, limit: int = 50) -> None:
        with self._lock:
            if len(self.run.warnings) >= limit:
                return
            self.run.warnings.append(text)
        self.save("warning", {"warning": text})

    def record_action(self, action: str, by: str | None, reason: str | None = None, **extra: Any) -> None:
        with self._lock:
            self.run.actions.append({"action": action, "by": by, "at": time.time(), "reason": reason, **extra})

    # -- waiting -------------------------------------------------------------------------------

    def wait_for(
        self,
        decide: Callable[[Tx], Any],
        timeout: float | None = None,
        watch: Callable[[Event], bool] | None = None,
    ) -> Any:
        """Run `decide(tx)` in a fresh transaction until it returns something other than None.

        Wakes on environment events (any, or those `watch` accepts), on the death of runs
        `decide` named via `ctx.watch_leases`, and on stop requests; never by polling. Returns
        None when `timeout` passes. Raises PhaseEnd when the run was asked to stop.
        """
        import threading

        deadline = None if timeout is None else time.monotonic() + timeout
        sub = self.env.subscribe()  # before the first decision: no lost wakeup
        stop_feed = threading.Event()

        def feed() -> None:
            while not stop_feed.is_set():
                ev = sub.get(0.5)  # short: woken at the end anyway (sub.wake)
                if ev is not None and (watch is None or watch(ev)):
                    self._wakeups.put("event")

        t = threading.Thread(target=feed, daemon=True, name="wait-events")
        t.start()
        self._watched = set()
        try:
            while True:
                self._check_stop()
                with self.env.transaction() as tx:
                    result = decide(tx)
                if result is not None:
                    return result
                if not self._wait_wakeup(deadline):  # a burst of wake-ups makes one re-decision
                    return None
        finally:
            stop_feed.set()
            sub.wake()  # let the feed thread see stop_feed before its socket goes away
            t.join()
            sub.close()

    def wait_woken(self, timeout: float | None = None) -> bool:
        """Block until `wake()`, the death of a run named via `watch_leases`, or a stop request
        (raises PhaseEnd); False when `timeout` passed. For phases that wait without events."""
        self._check_stop()
        if not self._wait_wakeup(None if timeout is None else time.monotonic() + timeout):
            return False
        self._check_stop()
        return True

    def _wait_wakeup(self, deadline: float | None) -> bool:
        """Block until a wake-up (True; a burst counts as one) or `deadline` (monotonic) passes
        (False). Sliced (wait_slice), so no timeout overflows however far the deadline is."""
        from runtools.model.durations import wait_slice

        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            try:
                self._wakeups.get(timeout=wait_slice(remaining))
                break
            except Empty:
                continue
        while True:  # drain a burst of wake-ups into one
            try:
                self._wakeups.get_nowait()
            except Empty:
                return True

    def watch_leases(self, runs: list[RunRecord]) -> None:
        """Wake the current `wait_for` when any of these runs' processes die."""
        import threading

        for r in runs:
            if r.instance_id in self._watched:
                continue
            self._watched.add(r.instance_id)

            def watcher(run: RunRecord = r) -> None:
                if self.env.wait_lease(run, None):
                    self._wakeups.put("lease")

            threading.Thread(target=watcher, daemon=True, name="wait-lease").start()

    def _check_stop(self) -> None:
        if self.stop_status is not None:
            status = Status.CANCELLED if self.stop_status is Status.STOPPED else self.stop_status
            raise PhaseEnd(status, f"{status.value.lower()} while {self.run.state or 'waiting'}", self.stop_exit)
