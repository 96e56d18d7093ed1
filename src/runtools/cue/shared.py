"""runcue services shared through an environment (docs/services.md, "runcue").

`Cue(env=...)` + `cue.service(name, shared=True)`: the cue's dispatches count against the
environment's service `name`, with every `run job --service name` of every process and host.

The cue is one holder record in the environment (job `runcue`, EXECUTING, with a lease): it
holds concurrency slots in `coord.service_hold` and, when it has to wait, a FIFO ticket in
`coord.service_wait`, exactly as a run does — so a dead cue frees its slots at once, and the
line is one line for runs and cues. Dispatch stays in process:

- `SharedRate` stands in the engine where a `RateWindow` would (`available`, `record`,
  `next_free`): it says yes while the cue holds an unexpired rate token and a free held slot.
- Tokens come in small batches from one transaction (`_Client._lease`). A batch granted at
  environment time `t` is recorded at `t + ttl` and used only until `ttl` after the moment the
  cue asked (its monotonic clock, read before the transaction): every real dispatch is at or
  before its recorded time, so the sliding-window rule holds for cue and CLI starts together.
  Unused tokens are given back in the next transaction.
- When the environment says no, the cue waits for the next rate slot (a timer) or for an
  event of the service (a slot freed) — never polls.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from queue import SimpleQueue
from typing import Any

from runtools.job import service as S
from runtools.model.events import Event
from runtools.model.status import Stage, State, Status

BATCH_DIVISOR = 8  # at most count // 8 + 1 tokens of a rate `count/period` per batch
TTL_MAX = 0.1


class SharedRate:
    """The loop-side state of one shared service (touched only on the event loop's thread)."""

    shared = True

    def __init__(self, client: _Client, name: str, definition: dict[str, Any]) -> None:
        self.client = client
        self.name = name
        self.define(definition)
        self.tokens: deque[list[float]] = deque()  # [expires (monotonic), n, recorded at (env clock)]
        self.returned: list[list[float]] = []  # [recorded at, n] expired unused: given back
        self.held = 0  # concurrency slots the environment granted us
        self.in_flight = False  # a lease transaction is on its way
        self.again = False  # asked while one was on its way
        self.parked = False  # the environment said no: wait for a timer or an event
        self.others_wait = False
        self.svc: Any = None  # the engine's ServiceState
        self.timer: Any = None
        self.releases = 0  # work units ended: a lease answer older than the last one must not park us

    def define(self, d: dict[str, Any]) -> None:
        self.d = d
        rates = d.get("rates") or []
        self.has_rate = bool(rates)
        self.conc = d.get("concurrent")
        self.count = min((int(r[0]) for r in rates), default=1 << 30)  # debug_blocked's words
        self.period = min((float(r[1]) for r in rates), default=1.0)
        self.ttl = min(TTL_MAX, self.period / 100)
        self.batch = min((int(r[0]) // BATCH_DIVISOR + 1 for r in rates), default=1 << 30)

    # -- the RateWindow face the engine uses ------------------------------------------------------

    def _has_token(self, now: float) -> bool:
        tokens = self.tokens
        while tokens and tokens[0][0] <= now:
            _exp, n, at = tokens.popleft()
            self.returned.append([at, n])
        return bool(tokens)

    def available(self, now: float) -> bool:
        ok = (not self.has_rate or self._has_token(now)) and (not self.conc or self.svc.running < self.held)
        if not ok and not self.parked:
            self.client.request(self)
        elif ok and self.has_rate and len(self.tokens) == 1 and self.tokens[0][1] <= self.batch // 2:
            self.client.request(self)  # the next batch on its way before this one runs out
        return ok

    def next_free(self, now: float) -> float:
        return now + 3600.0  # a grant, a timer or an event marks the service before this

    def record(self, now: float) -> None:
        if self.has_rate:
            batch = self.tokens[0]
            batch[1] -= 1
            if batch[1] <= 0:
                self.tokens.popleft()

    def used(self, now: float) -> int:
        return 0

    def blocked(self) -> dict[str, str]:
        """For Cue.debug_blocked: why work of this shared service does not start now."""
        full = bool(self.conc) and self.svc.running >= self.held
        return {"reason": "service_full" if full else "rate_limited",
                "details": f"shared service {self.name!r} of environment {self.client.env.name}: "
                f"{self.svc.running} running on {self.held} slot(s) held, "
                f"{sum(int(b[1]) for b in self.tokens)} rate token(s); waiting for the environment "
                f"(taro service show {self.name})"}

    def released(self) -> None:
        """A work unit of the service ended: give its slot back when others wait or we are idle."""
        self.parked = False  # a slot of ours is free: a reason to look again
        self.releases += 1
        if self.conc and (self.others_wait or not self.svc.queue):
            self.client.request(self)

    def wake(self) -> None:
        """Something happened to the service in the environment: try again."""
        self.parked = False
        self.client.mark(self)


class _Client:
    """The cue's end of the environment: the holder record, one worker thread for transactions,
    one thread for the environment's events."""

    def __init__(self, env: Any) -> None:
        self._spec = env
        self._owned = isinstance(env, str)
        self._env: Any = None if self._owned else env
        self.services: dict[str, SharedRate] = {}
        self.record: Any = None
        self.lease: Any = None
        self.loop: Any = None
        self.mark_cb: Any = None
        self._jobs: SimpleQueue = SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._sub: Any = None
        self._stopping = False

    @property
    def env(self) -> Any:
        if self._env is None:  # opened on first use, closed by stop() when we opened it
            from runtools.env import open_environment

            self._env = open_environment(self._spec)
        return self._env

    def close(self) -> None:
        if self._owned and self._env is not None:
            self._env.close()
            self._env = None

    def define(self, name: str) -> SharedRate:
        with self.env.transaction() as tx:
            d = S.definition(tx, name)
        if d is None:
            if not self.services:
                self.close()
            raise ValueError(f"Unknown service: {name} (not defined in environment {self.env.name}: "
                             f"`taro service set {name} --rate N/UNIT --concurrent N`)")
        sr = self.services.get(name)
        if sr is None:
            sr = self.services[name] = SharedRate(self, name, d)
        else:
            sr.define(d)
        return sr

    # -- lifecycle (on the loop's thread) ---------------------------------------------------------

    def start(self, loop: Any, mark: Any) -> None:
        if self.record is not None:
            return
        from runtools.model.ids import new_run_id
        from runtools.model.run import RunRecord

        self.loop, self.mark_cb, self._stopping = loop, mark, False
        now = time.time()
        rec = RunRecord(job_id="runcue", run_id=new_run_id(), created_at=now,
                        host=os.environ.get("RUNTOOLS_HOST") or os.uname().nodename, pid=os.getpid())
        rec.stage, rec.state, rec.started_at = Stage.RUNNING, State.EXECUTING, now
        rec.detail = "runcue: shared " + ", ".join(sorted(self.services))
        rec.coord = {"services": sorted(self.services), "cue": True}
        self.lease = self.env.lease(rec)
        if hasattr(self.lease, "on_lost"):  # postgres: the lease connection cut longer than its grace
            self.lease.on_lost = self._lease_lost
        with self.env.transaction() as tx:
            tx.insert(rec)
            tx.publish_after_commit(Event("created", rec.copy()))
        self.record = rec
        self._sub = self.env.subscribe()
        for target, name in ((self._work, "runcue-env"), (self._listen, "runcue-env-events")):
            t = threading.Thread(target=target, daemon=True, name=name)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """End the holder record (COMPLETED): its slots and unused tokens go back."""
        if self.record is None:
            return
        self._stopping = True
        self._jobs.put(None)
        if self._sub is not None:
            self._sub.wake()
        for t in self._threads:
            t.join(5.0)
        self._threads = []
        for sr in self.services.values():
            if sr.timer is not None:
                sr.timer.cancel()
                sr.timer = None
            sr.returned.extend([at, n] for _exp, n, at in sr.tokens)
            sr.tokens.clear()
        rec = self.record
        try:
            with self.env.transaction() as tx:
                for sr in self.services.values():
                    self._give_back(tx, sr, tx.get_setting(S.SERVICE_LOG, sr.name) or {}, sr.returned)
                    sr.returned, sr.held, sr.in_flight, sr.parked = [], 0, False, False
                rec.coord.pop("service_hold", None)
                rec.coord.pop("service_wait", None)
                rec.stage, rec.status, rec.ended_at, rec.exit_code = Stage.ENDED, Status.COMPLETED, time.time(), 0
                tx.update(rec)
                tx.publish_after_commit(Event("ended", rec.copy()))
        finally:
            self.lease.release()
            if self._sub is not None:
                self._sub.close()
                self._sub = None
            self.record = None
            self.close()

    def _lease_lost(self, why: str) -> None:
        """Our lease is gone for good: others may now take our slots, so stop dispatching shared
        work (what runs goes on; runcue cannot stop a handler). Called on the lease's thread."""
        import logging

        logging.getLogger("runcue").error("runcue: lease of the shared services lost (%s): no more dispatches "
                                          "of %s", why, ", ".join(sorted(self.services)))

        def lost() -> None:
            self._stopping = True
            for sr in self.services.values():
                sr.tokens.clear()
                sr.held, sr.parked = 0, True

        try:
            self.loop.call_soon_threadsafe(lost)
        except RuntimeError:
            pass

    # -- asking (loop thread) -------------------------------------------------------------------

    def request(self, sr: SharedRate) -> None:
        """Ask the environment for what `sr` needs now (one transaction on the worker thread).

        The environment's count of our slots is never below what we may use: slots are given
        back by lowering our own cap here first, and taken by raising it only once granted."""
        if self.record is None or self._stopping:
            return
        svc = sr.svc
        if sr.conc and (sr.others_wait or not svc.queue) and sr.held > svc.running:
            sr.held = svc.running  # idle slots go back: stop using them before the environment hears
        if sr.in_flight:
            sr.again = True
            return
        sr.in_flight, sr.again = True, False
        have = sum(int(b[1]) for b in sr.tokens)
        returned, sr.returned = sr.returned, []
        self._jobs.put((sr, len(svc.queue), svc.running, sr.held, have, returned,
                        (time.monotonic(), sr.releases)))

    def mark(self, sr: SharedRate) -> None:
        if sr.timer is not None:
            sr.timer.cancel()
            sr.timer = None
        if sr.svc is not None and self.mark_cb is not None:
            self.mark_cb(sr.svc)

    def _granted(self, sr: SharedRate, asked: Any, k: int, at: float, held: int, retry: float | None,
                 others: bool, park: bool) -> None:
        sr.in_flight = False
        sr.held = held
        sr.others_wait = others
        asked, releases = asked
        if k:
            sr.tokens.append([asked + sr.ttl, k, at])
        if sr.again:  # asked again meanwhile (a slot to give back, a unit ended): once more
            self.request(sr)
        elif park and releases == sr.releases:  # no, and none of ours ended since: a timer or an event wakes us
            sr.parked = True
            if retry is not None:
                sr.timer = self.loop.call_later(retry + 0.0005, sr.wake)
            return
        sr.parked = False
        self.mark(sr)

    # -- the worker thread: one transaction per request -------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            sr = job[0]
            try:
                result = self._lease(*job)
            except Exception:  # storage trouble: try again a little later, never spin
                import logging

                logging.getLogger("runcue").warning("runcue: shared service %s: lease failed", sr.name,
                                                    exc_info=True)
                result = (0, 0.0, job[3], 1.0, sr.others_wait, True)
            try:
                self.loop.call_soon_threadsafe(self._granted, sr, job[-1], *result)
            except RuntimeError:  # the loop is closed
                return

    def _lease(self, sr: SharedRate, demand: int, running: int, floor: int, have: int, returned: list[list[float]],
               asked: Any) -> tuple[int, float, int, float | None, bool, bool]:
        """(tokens granted, recorded at, slots held now, retry in s or None, others wait, park)."""
        rec, name, d = self.record, sr.name, sr.d
        me = rec.instance_id
        with self.env.transaction() as tx:
            now = tx.now()
            active = [r for r in tx.active_runs() if r.instance_id != me]
            log = tx.get_setting(S.SERVICE_LOG, name) or {}
            changed = self._give_back(tx, sr, log, returned)
            line = S.waiters(active, name)
            ticket = (rec.coord.get("service_wait") or {}).get(name)
            ahead = [r for r in line if ticket is None or int(r.coord["service_wait"][name]) < ticket]
            hold = rec.coord.get("service_hold") or {}
            before = int(hold.get(name, 0))
            want = demand > 0
            free = not ahead  # FIFO: nobody waits ahead of us for this service
            held, k, retry = floor, 0, None
            if sr.conc:
                cap = max(int(sr.conc) - S.in_use(active, name), floor)  # the most we may hold
                if want and free:
                    target = running + demand  # as many as our queue can use
                elif line or not want:
                    target = running  # others wait (or we are idle): give idle slots back
                else:
                    target = before
                held = max(floor, min(target, cap))  # never below what we may be using
            if want and free and sr.has_rate:
                usable = demand if not sr.conc or held > running else 0  # tokens for a batch of starts
                room, nxt = S.rate_room(d, log.get("starts") or [], now)
                k = max(0, min(usable - have, room, sr.batch))
                if k:
                    S.record_start(tx, name, d, log, now, k, f"runcue:{me}", at=now + sr.ttl)
                    changed = False
                elif room <= 0 and nxt is not None:
                    retry = max(nxt - now, 0.0)
            granted = want and free and (not sr.has_rate or k > 0 or have > 0) and (not sr.conc or held > running)
            if changed:
                tx.put_setting(S.SERVICE_LOG, name, log)
            prev_wait = dict(rec.coord.get("service_wait") or {})
            wait = dict(prev_wait)
            if want and not granted:
                if name not in wait:
                    wait[name] = S.take_ticket(tx)
            elif granted:
                wait.pop(name, None)
            if wait:
                rec.coord["service_wait"] = wait
            else:
                rec.coord.pop("service_wait", None)
            if held:
                hold = {**hold, name: held}
            else:
                hold = {n: v for n, v in hold.items() if n != name}
            if hold:
                rec.coord["service_hold"] = hold
            else:
                rec.coord.pop("service_hold", None)
            if held != before or wait != prev_wait:
                rec.detail = "runcue: " + ", ".join(
                    f"{n} {v} held" for n, v in sorted(hold.items())) if hold else "runcue: idle"
                tx.update(rec)
                if held < before and line:
                    tx.publish_after_commit(Event("released", rec.copy(), detail={"service": name}))
            return k, (now + sr.ttl) if k else 0.0, held, retry, bool(line), want and not granted

    @staticmethod
    def _give_back(tx: Any, sr: SharedRate, log: dict[str, Any], returned: list[list[float]]) -> bool:
        """Remove expired, unused tokens from the log (they were recorded, never used)."""
        if not returned:
            return False
        starts = log.get("starts") or []
        for at, n in returned:
            for s in starts:
                if s[0] == at and s[1] > 0:
                    s[1] = max(0, int(s[1]) - int(n))
                    break
        log["starts"] = [s for s in starts if s[1] > 0]
        return True

    # -- the events thread ----------------------------------------------------------------------

    def _listen(self) -> None:
        sub = self._sub
        me = self.record.instance_id
        while not self._stopping:
            ev = sub.get(0.5)
            if ev is None or ev.run.instance_id == me:
                continue
            c = ev.run.coord
            touched = c.get("services") or c.get("service_hold") or c.get("service_wait") or ()
            hits = [sr for n, sr in self.services.items() if n in touched]
            if not hits:
                continue
            try:
                self.loop.call_soon_threadsafe(self._on_event, hits, ev.event)
            except RuntimeError:
                return

    def _on_event(self, hits: list[SharedRate], event: str) -> None:
        for sr in hits:
            if event == "waiting":
                sr.others_wait = True
                if sr.held > sr.svc.running:
                    self.request(sr)  # give idle slots back to the run that waits
            if sr.parked:
                sr.wake()
