"""Gates: a run waits PENDING until a person lets it through (`--pending LATCH`, `--approval NAME`).

`taro release LATCH` lets through every run pending on that latch; `taro approve|resume PATTERN`
lets through matching runs at any gate; `taro deny PATTERN` ends them DENIED. The request
reaches the live run through its control endpoint (`Phase.control`), is recorded on the run
(who, when, why) and pushed as an event (`released`, `approved`, `denied`). A request that
arrives before the run reached its gate is kept and honoured on arrival: no lost release.
"""

from __future__ import annotations

import threading
import time

from runtools.job.phase import Phase, PhaseEnd, RunContext
from runtools.model.events import Event
from runtools.model.status import Stage, State, Status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runtools.env.base import Tx

_PASS = {"release": "released", "approve": "approved", "resume": "approved"}


class Gate(Phase):
    """Waits PENDING for a latch release (`latch`) or an approval (`approval`); one of the two."""

    name = "gate"

    def __init__(self, latch: str | None = None, approval: str | None = None, timeout: float | None = None) -> None:
        if bool(latch) == bool(approval):
            raise ValueError("a gate has either a latch or an approval name")
        self.latch = latch
        self.approval = approval
        self.timeout = timeout
        self.kind = "latch" if latch else "approval"
        self.coord: dict[str, Any] = {self.kind: latch or approval}
        if timeout is not None:
            self.coord["pending_timeout_s"] = timeout
        self._lock = threading.Lock()
        self._decision: dict[str, Any] | None = None  # {"action", "by", "reason"}
        self._settled = False

    @property
    def label(self) -> str:
        return f"latch {self.latch}" if self.latch else f"approval {self.approval}"

    # -- control (from the run's control endpoint thread) --------------------------------------

    def control(self, ctx: RunContext, request: dict[str, Any]) -> dict[str, Any] | None:
        op = request.get("op")
        if op not in ("release", "approve", "resume", "deny"):
            return None
        if op == "release" and request.get("latch") != self.latch:
            return None  # another gate's latch (or this is an approval gate)
        with self._lock:
            if self._settled or self._decision is not None:
                return None  # already through this gate: let a later gate answer
            action = "denied" if op == "deny" else _PASS[op]
            self._decision = {"action": action, "by": request.get("by"), "reason": request.get("reason")}
        extra = {self.kind: self.latch or self.approval}
        ctx.record_action(action, request.get("by"), request.get("reason"), **extra)
        ctx.wake("gate")
        return {"ok": True, "instance_id": ctx.run.instance_id, "action": action, **extra}

    # -- the phase -----------------------------------------------------------------------------

    def run(self, ctx: RunContext) -> None:
        ctx.set_state(State.PENDING, f"PENDING {self.label}", "pending")
        # Only a control request (or a stop, or the timeout) can open a gate: wait on the run's own
        # wake-ups, without an event subscription. A request arriving between the check and the
        # wait has already queued its wake-up, so it is never lost.
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            with ctx.env.transaction() as tx:
                decision = self._settle(tx, ctx)
            if decision is not None:
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            ctx.wait_woken(remaining)
        if decision is None:
            from runtools.model.durations import human_duration

            with self._lock:
                self._settled = True
            raise PhaseEnd(Status.TIMEOUT, f"not released within {human_duration(self.timeout)} ({self.label})")
        if decision["action"] == "denied":
            why = f": {decision['reason']}" if decision.get("reason") else ""
            raise PhaseEnd(Status.DENIED, f"denied by {decision.get('by') or 'unknown'}{why}")

    def _settle(self, tx: Tx, ctx: RunContext) -> dict[str, Any] | None:
        with self._lock:
            decision = self._decision
            if decision is None:
                return None
            self._settled = True
        run = ctx.run
        if decision["action"] != "denied":
            run.coord[f"{self.kind}_passed"] = True
            run.stage, run.detail = Stage.RUNNING, None
        tx.update(run)
        detail = {"by": decision.get("by"), self.kind: self.latch or self.approval}
        if decision.get("reason"):
            detail["reason"] = decision["reason"]
        tx.publish_after_commit(Event(decision["action"], run.copy(), detail=detail))
        return decision

