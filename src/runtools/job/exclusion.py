"""Execution queue (`--max-concurrent N`, `--serial`, `--queue-group G`) and mutual exclusion (`-x`).

Queue: on entering, a run takes a FIFO ticket (a per-group counter in the environment's
settings) in the same transaction that records it QUEUED. It takes an execution slot, again in
one transaction that marks `coord.slot`, when fewer than N runs hold slots and no run is queued
ahead of it: slots go out strictly in ticket (arrival) order. A slot is held until the run
ends; a dead run (lease gone) is ended LOST by whichever transaction notices, which frees it.

Waking, without a thundering herd: a queued run re-decides only when it can have become
eligible. From its last decision it knows which runs are ahead of it and how many of them must
end; its event filter counts their `ended` events and wakes it when enough have ended. When
nobody is queued ahead any more it starts watching the slot holders' leases from the event
itself, without a decision (one decision fewer per hand-off, at the busiest moment). Only the
front of the line (N + 2 runs) listens to events at all: a run further back waits without a
subscription (its record says `listening: false`) and is poked through its control endpoint by
the decision that brings it near the front. Crashed runs are noticed through leases: the first
queued run watches the holders', every other queued run the run just ahead of it, so every
death is noticed by someone and published as an `ended` (LOST) event, which the others count
like any other end (and a re-decision pokes whoever came near the front).

Mutual exclusion: at the moment of executing, one transaction checks whether any other active
run holds the group (`coord.mutex`, or is a run of the job named like the group that is
executing) and either marks this run as holding it or ends it OVERLAP.
"""

from __future__ import annotations

import threading
import time

from runtools.job.coordination import ordinal
from runtools.job.phase import Phase, PhaseEnd, RunContext
from runtools.model.events import Event
from runtools.model.status import Stage, State, Status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runtools.env.base import Tx
    from runtools.model.run import RunRecord

#: settings kind with the next FIFO ticket of each queue group: {group: {"next": n}}
QUEUE_SEQ = "queue_seq"


def _ticket(r: RunRecord) -> int:
    return int(r.coord.get("ticket") or 0)


class _View:
    """What a queued run last saw: runs ahead of it, slot holders, and how many must end."""

    __slots__ = ("ahead", "departed", "holders", "needed", "runs", "to_watch")

    def __init__(self, ahead: set[str], holders: set[str], needed: int,
                 runs: dict[str, RunRecord] | None = None) -> None:
        self.ahead, self.holders, self.needed, self.departed = ahead, holders, needed, 0
        self.runs = runs or {}  # records of the holders (and of runs ahead, which may become holders)
        self.to_watch: list[RunRecord] = []  # holders whose leases the run must watch from now on

    def apply(self, iid: str, ended: bool, slot: bool, run: RunRecord | None = None) -> bool:
        """Account one event of the group; True when the run should decide again."""
        if iid in self.ahead:
            if ended:
                self.departed += 1
            elif slot:
                self.holders.add(iid)
                if run is not None:
                    self.runs[iid] = run
            else:
                return False
            self.ahead.discard(iid)
            if self.departed >= self.needed:
                return True
            if not self.ahead:  # first in line now: a holder's death must wake it (DESIGN §3.2)
                self.to_watch = [self.runs[h] for h in self.holders if h in self.runs]
            return False
        if iid in self.holders and ended:
            self.holders.discard(iid)
            self.departed += 1
            return self.departed >= self.needed
        return False


class ExecutionQueue(Phase):
    """Waits QUEUED until one of `max_concurrent` execution slots of `group` is free (FIFO)."""

    name = "queue"

    def __init__(self, group: str, max_concurrent: int) -> None:
        if int(max_concurrent) < 1:
            from runtools.errors import UsageError

            raise UsageError("--max-concurrent must be at least 1")
        self.group = group
        self.limit = int(max_concurrent)
        self.window = self.limit + 2  # this many at the front of the line listen to events
        self.coord: dict[str, Any] = {"queue_group": group, "max_concurrent": self.limit}
        self._lock = threading.Lock()
        self._view: _View | None = None
        self._log: list[tuple[str, bool, bool, RunRecord]] = []  # group events seen while deciding
        self._position = 0

    def run(self, ctx: RunContext) -> None:
        def on_event(ev: Event) -> bool:
            r = ev.run
            if r.coord.get("queue_group") != self.group:
                return False
            item = (r.instance_id, not r.active, bool(r.coord.get("slot")), r)
            with self._lock:
                if self._view is None:
                    self._log.append(item)
                    return False
                wake = self._view.apply(*item)
                watch, self._view.to_watch = self._view.to_watch, []
            if watch:
                ctx.watch_leases(watch)
            return wake

        with ctx.env.transaction() as tx:
            if self._decide(tx, ctx, listening=False):
                return
        # Far back in line: no event subscription (every event would cost every queued run a
        # wake-up). Woken by the run ahead dying, or by a poke once the line brings it near.
        if self._position >= self.window:
            ctx.wait_woken()
        while not ctx.wait_for(lambda tx: self._decide(tx, ctx, listening=True), watch=on_event):
            ctx.wait_woken()  # still far back (False): wait for the next poke

    def control(self, ctx: RunContext, request: dict[str, Any]) -> dict[str, Any] | None:
        if request.get("op") == "queue-wake" and request.get("group") == self.group:
            ctx.wake("queue")
            return {"ok": True}
        return None

    def _decide(self, tx: Tx, ctx: RunContext, listening: bool) -> bool | None:
        with self._lock:
            self._view, self._log = None, []
        run = ctx.run
        me = run.instance_id
        members = [r for r in tx.active_runs() if r.instance_id != me and r.coord.get("queue_group") == self.group]
        holders = [r for r in members if r.coord.get("slot")]
        waiting = sorted((r for r in members if not r.coord.get("slot") and r.coord.get("ticket")), key=_ticket)
        first = not run.coord.get("ticket")
        if first:
            counter = tx.get_setting(QUEUE_SEQ, self.group) or {}
            ticket = max([int(counter.get("next", 1))] + [_ticket(r) + 1 for r in members])
            tx.put_setting(QUEUE_SEQ, self.group, {"next": ticket + 1})
            run.coord["ticket"] = ticket
            run.coord["queued_at"] = time.time()
        ticket = run.coord["ticket"]
        ahead = [r for r in waiting if _ticket(r) < ticket]
        behind = [r for r in waiting if _ticket(r) > ticket]
        run.stage = Stage.RUNNING
        if not ahead and len(holders) < self.limit:  # strictly FIFO: nobody queued ahead
            run.coord["slot"] = True
            run.coord["slot_at"] = time.time()
            run.coord.pop("listening", None)
            if run.state is State.QUEUED:
                run.detail = f"QUEUED: took a slot in group {self.group}"
            tx.update(run)
            self._renumber(tx, behind, run)
            self._poke(ctx, behind)
            return True

        was_queued = run.state is State.QUEUED
        run.state = State.QUEUED
        self._position = len(ahead)
        far = self._position >= self.window
        run.coord["listening"] = listening and not far
        line = [*ahead, run, *behind]
        self._renumber(tx, line, run)
        tx.update(run)
        if not was_queued:
            detail = {"group": self.group, "position": len(ahead) + 1, "of": len(line), "max_concurrent": self.limit}
            tx.publish_after_commit(Event("queued", run.copy(), detail=detail))
        self._poke(ctx, line)
        # Leases to watch: the first in line watches the slot holders, the others the run just ahead.
        ctx.watch_leases([ahead[-1]] if ahead else holders)
        if not listening:
            return None
        if far:
            return False  # leave wait_for: wait for a poke without a subscription
        needed = len(holders) + len(ahead) - self.limit + 1
        with self._lock:
            view = self._view = _View({r.instance_id for r in ahead}, {r.instance_id for r in holders}, needed,
                                      {r.instance_id: r for r in [*ahead, *holders]})
            wake = False
            for item in self._log:
                wake = view.apply(*item) or wake
            self._log = []
            watch, view.to_watch = view.to_watch, []
        if watch:
            ctx.watch_leases(watch)
        if wake:
            ctx.wake("queue")
        return None

    def _poke(self, ctx: RunContext, line: list[RunRecord]) -> None:
        """Wake queued runs that came near the front while not listening to events. Sent from a
        thread: the poked run re-decides in its own transaction, after ours commits."""
        me = ctx.run.instance_id
        sleepers = [r.instance_id for r in line[: self.window] if r.instance_id != me
                    and r.coord.get("listening") is False]
        if not sleepers:
            return
        env, request = ctx.env, {"op": "queue-wake", "group": self.group}

        def send() -> None:
            for iid in sleepers:
                try:
                    env.control(iid, request, timeout=2.0)
                except Exception:  # gone meanwhile; its successor notices through its lease
                    pass

        import _thread

        _thread.start_new_thread(send, ())  # (Thread.start would wait until it runs: on the hand-off's path)

    def _renumber(self, tx: Tx, line: list[RunRecord], me: RunRecord) -> None:
        """Keep `QUEUED 3rd of 5 in group G` true for everyone in line (shown by `taro ps`)."""
        n = len(line)
        for i, r in enumerate(line):
            text = f"QUEUED {ordinal(i + 1)} of {n} in group {self.group}"
            if r is me:
                me.detail = text
            elif r.state is State.QUEUED and r.detail != text:
                r.detail = text
                tx.update(r)


class MutualExclusion(Phase):
    """Ends the run OVERLAP when another active run holds `group`; else holds it until the end."""

    name = "mutex"

    def __init__(self, group: str) -> None:
        self.group = group
        self.coord: dict[str, Any] = {"excl_group": group}

    def holds(self, r: RunRecord) -> bool:
        if r.coord.get("excl_group") == self.group and r.coord.get("mutex"):
            return True
        return r.job_id == self.group and r.state is State.EXECUTING

    def run(self, ctx: RunContext) -> None:
        run = ctx.run
        me = run.instance_id
        with ctx.env.transaction() as tx:
            holder = next((r for r in tx.active_runs() if r.instance_id != me and self.holds(r)), None)
            if holder is None:
                run.coord["mutex"] = True
                run.stage = Stage.RUNNING
                tx.update(run)
            else:
                detail = {"group": self.group, "holder": holder.instance_id}
                tx.publish_after_commit(Event("overlap", run.copy(), detail=detail))
        if holder is not None:
            raise PhaseEnd(Status.OVERLAP, f"overlap: {holder.instance_id} is executing in group {self.group}")
