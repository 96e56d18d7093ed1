"""Shared services: one rate and concurrency limit for every run and runcue of an environment.

A service (`taro service set api --rate 60/min --concurrent 5`, or `[services.api]` in
runtools.toml) is kept in the environment's settings, so it holds across processes (local)
and hosts (postgres). Everything below is written against `Tx`: each decision is one short
exclusive transaction of the environment, and reads the time from it (`tx.now()`: the
machine's clock locally, the database server's on postgres), so all deciders share one clock.

Semantics (docs/services.md):

- rate `N/T`: at most N starts in any interval of T seconds (a sliding window, as runcue's).
  A start is the admission time recorded in the service's log (`service_log` setting) in the
  transaction that admits it. A start at `now` is allowed when fewer than N recorded starts
  lie in `(now - T, now + T)`; the log never holds times before `now - T` that matter.
- concurrency `N`: at most N holders at once. A run holds one slot from its admission until it
  ends; a runcue holds as many as its `service_hold` says. A holder whose lease is gone is
  ended LOST by `tx.active_runs()` inside the deciding transaction, so its slot is free at once.
- FIFO: a waiter takes one ticket (a counter shared by all services, so two services never
  order two waiters differently and multi-service waiters cannot deadlock) and is admitted only
  when no waiter with a smaller ticket waits for any of the same services.

What a record carries in `run.coord`:

    services          names the run uses (`run job --service`, repeatable)
    service_ticket    its FIFO ticket, taken on first waiting
    service_wait      {name: ticket} while waiting
    service_hold      {name: slots} while holding concurrency slots (1 per service for a run)
    service_since     when it began to wait (environment clock)
    service_at        the admission time (environment clock)
"""

from __future__ import annotations

import _thread

from runtools.job.phase import Phase, PhaseEnd, RunContext
from runtools.model.events import Event
from runtools.model.status import Stage, State, Status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runtools.env.base import Tx
    from runtools.model.run import RunRecord

#: settings kind of definitions: {name: {"rates": [[count, period, text]], "concurrent": n|None, ...}}
SERVICE = "service"
#: settings kind of admissions: {name: {"starts": [[t, n], ...], "recent": [[t, who], ...]}}
SERVICE_LOG = "service_log"
#: settings kind with the next FIFO ticket (one counter, key "*")
SERVICE_SEQ = "service_seq"
RECENT = 20  # admissions kept for `taro service show`
SAFETY_RECHECK = 10.0  # a waiter re-decides at least this often (a definition changed, a lost event)


# -- definitions ---------------------------------------------------------------------------------


def parse_definition(rates: list[str] | str | None, concurrent: Any, where: str = "") -> dict[str, Any]:
    """A definition from its texts; ValueError naming what is wrong."""
    from runtools.cue.rates import parse_rate

    if isinstance(rates, str):
        rates = [rates]
    out: list[list[Any]] = []
    for text in rates or []:
        if not isinstance(text, str):
            raise ValueError(f"{where}rate must be a string like '60/min', not {text!r}")
        count, period = parse_rate(text)
        out.append([count, period, text.strip()])
    if concurrent is not None and (isinstance(concurrent, bool) or not isinstance(concurrent, int) or concurrent < 1):
        raise ValueError(f"{where}concurrent must be a whole number >= 1, not {concurrent!r}")
    if not out and concurrent is None:
        raise ValueError(f"{where}a service needs --rate N/UNIT or --concurrent N (or both)")
    return {"rates": out, "concurrent": concurrent}


def config_definitions() -> dict[str, dict[str, Any]]:
    """[services.NAME] tables of runtools.toml (checked when the file was read)."""
    from runtools.config import load

    out = {}
    for name, table in load().section("services").items():
        d = parse_definition(table.get("rate"), table.get("concurrent"), f"[services.{name}] ")
        d["source"] = load().source("services", name)
        out[name] = d
    return out


def check_config_table(name: str, table: Any) -> str | None:
    """What is wrong with a [services.NAME] table, or None (for config_schema)."""
    from runtools.model.ids import is_valid_id

    if not is_valid_id(name):
        return "a service name is 1-128 letters, digits, '_', '.', ':', '+' or '-'"
    if not isinstance(table, dict):
        return 'must be a table: [services.NAME] rate = "60/min", concurrent = 5'
    unknown = [k for k in table if k not in ("rate", "concurrent")]
    if unknown:
        return f"unknown key {unknown[0]!r}; known: rate, concurrent"
    try:
        parse_definition(table.get("rate"), table.get("concurrent"))
    except ValueError as e:
        return str(e)
    return None


def definition(tx: Tx, name: str) -> dict[str, Any] | None:
    """The service `name`: the environment's definition, else the config file's."""
    d = tx.get_setting(SERVICE, name)
    if d is not None:
        return d
    return config_definitions().get(name)


def limits_text(d: dict[str, Any]) -> str:
    parts = [f"rate {r[2]}" for r in d.get("rates") or []]
    if d.get("concurrent"):
        parts.append(f"concurrent {d['concurrent']}")
    return ", ".join(parts)


# -- the rate log ------------------------------------------------------------------------------


def _longest(d: dict[str, Any]) -> float:
    return max((float(r[1]) for r in d.get("rates") or []), default=0.0)


def prune(starts: list[list[float]], d: dict[str, Any], now: float) -> list[list[float]]:
    """Drop starts no window reaching `now` can contain."""
    longest = _longest(d)
    return [s for s in starts if s[0] + longest > now]


def rate_room(d: dict[str, Any], starts: list[list[float]], now: float) -> tuple[int, float | None]:
    """(starts allowed at `now`, when the next one is allowed if none is: environment clock).
    A start at `now` is allowed while fewer than N recorded starts lie in (now - T, ...)."""
    room: int | None = None
    nxt: float | None = None
    for count, period, _text in d.get("rates") or []:
        inside = sorted((s for s in starts if s[0] + period > now), key=lambda s: s[0])
        used = sum(int(s[1]) for s in inside)
        free = int(count) - used
        room = free if room is None else min(room, free)
        if free <= 0:  # the oldest starts leave the window one by one: when is one place free?
            over = used - int(count) + 1
            for t, n in inside:
                over -= int(n)
                if over <= 0:
                    at = t + period
                    nxt = at if nxt is None else max(nxt, at)
                    break
    return (max(room, 0) if room is not None else 1 << 30), nxt


def slot_time(d: dict[str, Any], starts: list[list[float]], now: float, m: int) -> float:
    """When the m-th start from now (m >= 1) is allowed by every rate, if the ones before it
    take their slots as soon as they can (environment clock; `now` when there is room)."""
    at = now
    for count, period, _text in d.get("rates") or []:
        inside = sorted((s for s in starts if s[0] + period > now), key=lambda s: s[0])
        need = sum(int(s[1]) for s in inside) + m - int(count)  # this many must leave the window
        for t, n in inside:
            if need <= 0:
                break
            need -= int(n)
            if need <= 0:
                at = max(at, t + period)
    return at


def record_start(tx: Tx, name: str, d: dict[str, Any], log: dict[str, Any], now: float, n: int, who: str,
                 at: float | None = None) -> None:
    """Count `n` starts at `at` (default `now`) in the service's log."""
    starts = prune(log.get("starts") or [], d, now)
    if d.get("rates"):
        starts.append([now if at is None else at, n])
        starts.sort(key=lambda s: s[0])
    recent = [*(log.get("recent") or [])[-(RECENT - 1):], [now, who, n]]
    log["starts"], log["recent"] = starts, recent
    tx.put_setting(SERVICE_LOG, name, log)


def take_ticket(tx: Tx) -> int:
    counter = tx.get_setting(SERVICE_SEQ, "*") or {}
    ticket = int(counter.get("next", 1))
    tx.put_setting(SERVICE_SEQ, "*", {"next": ticket + 1})
    return ticket


def holders(active: list[RunRecord], name: str) -> list[RunRecord]:
    return [r for r in active if (h := r.coord.get("service_hold")) and h.get(name)]


def in_use(active: list[RunRecord], name: str) -> int:
    return sum(int(r.coord["service_hold"][name]) for r in holders(active, name))


def waiters(active: list[RunRecord], name: str) -> list[RunRecord]:
    """Runs (and cues) waiting for `name`, in FIFO order."""
    found = [r for r in active if (w := r.coord.get("service_wait")) and name in w]
    return sorted(found, key=lambda r: int(r.coord["service_wait"][name]))


def snapshot(tx: Tx, name: str) -> dict[str, Any] | None:
    """What `taro service show` prints: definition, use now, recent admissions, who waits."""
    d = definition(tx, name)
    if d is None:
        return None
    now = tx.now()
    active = tx.active_runs()
    log = tx.get_setting(SERVICE_LOG, name) or {}
    starts = prune(log.get("starts") or [], d, now)
    rates = []
    for count, period, text in d.get("rates") or []:
        used = sum(int(s[1]) for s in starts if s[0] + period > now)
        rates.append({"rate": text, "limit": count, "period_s": period, "used": used})
    _room, nxt = rate_room(d, starts, now)
    from runtools.model.durations import iso

    return {
        "name": name,
        "rates": [r[2] for r in d.get("rates") or []],
        "concurrent": d.get("concurrent"),
        "source": d.get("source") or "environment",
        "in_use": in_use(active, name),
        "holders": [{"instance_id": r.instance_id, "slots": int(r.coord["service_hold"][name]),
                     "since": iso(r.coord.get("service_at"))} for r in holders(active, name)],
        "rate_use": rates,
        "next_slot_in_s": None if nxt is None else round(max(nxt - now, 0.0), 3),
        "waiting": [{"instance_id": r.instance_id, "ticket": int(r.coord["service_wait"][name]),
                     "detail": r.detail} for r in waiters(active, name)],
        "recent": [{"at": iso(e[0]), "by": e[1], "starts": e[2] if len(e) > 2 else 1}
                   for e in reversed(log.get("recent") or [])],
    }


# -- the phase of `run job --service` ------------------------------------------------------------


class ServiceAdmission(Phase):
    """Waits WAITING until every one of `names` admits the run (FIFO), then holds a slot of each
    until the run ends. Innermost coordination phase (DESIGN §4: after the mutex)."""

    name = "service"

    def __init__(self, names: list[str]) -> None:
        self.names = list(dict.fromkeys(names))
        self.coord: dict[str, Any] = {"services": self.names}
        self._lock = _thread.allocate_lock()  # not `threading`: an admitted run never needs it
        self._wake_ids: set[str] = set()
        self._seen: list[str] | None = None  # ids of events seen while a decision runs

    def run(self, ctx: RunContext) -> None:
        env = ctx.env
        with env.transaction() as tx:
            wait = self._decide(tx, ctx)
        if wait is True:
            return
        import threading

        sub = env.subscribe()
        stop = threading.Event()
        me = ctx.run.instance_id
        names = self.names

        def feed() -> None:
            while not stop.is_set():
                ev = sub.get(0.5)
                if ev is None or ev.run.instance_id == me:
                    continue
                c = ev.run.coord
                touched = c.get("services") or c.get("service_hold") or c.get("service_wait") or ()
                if not any(n in touched for n in names):
                    continue
                iid = ev.run.instance_id
                with self._lock:
                    if self._seen is not None:
                        self._seen.append(iid)
                    hit = iid in self._wake_ids or ev.event == "released"
                if hit:
                    ctx.wake("service")

        t = threading.Thread(target=feed, daemon=True, name="service-events")
        t.start()
        try:
            while True:
                with self._lock:
                    self._seen = []
                with env.transaction() as tx:
                    wait = self._decide(tx, ctx)
                if wait is True:
                    return
                with self._lock:
                    seen, self._seen = self._seen or [], None
                    missed = any(i in self._wake_ids for i in seen)
                if missed:
                    continue
                ctx.wait_woken(SAFETY_RECHECK if wait is None else min(wait, SAFETY_RECHECK))
        finally:
            stop.set()
            sub.wake()
            t.join()
            sub.close()

    def _decide(self, tx: Tx, ctx: RunContext) -> bool | float | None:
        """True: admitted. Else the seconds until a rate slot may free (None: wait for events)."""
        run = ctx.run
        me = run.instance_id
        now = tx.now()
        specs = {}
        for n in self.names:
            d = definition(tx, n)
            if d is None:
                raise PhaseEnd(Status.UNSATISFIED, f"service {n} is not defined: `taro service set {n} "
                               f"--rate N/UNIT --concurrent N`, or [services.{n}] in runtools.toml")
            specs[n] = d
        active = [r for r in tx.active_runs() if r.instance_id != me]
        ticket = run.coord.get("service_ticket")
        blocked: list[str] = []
        wake_ids: set[str] = set()
        watch: list[RunRecord] = []
        timer: float | None = None
        logs: dict[str, dict[str, Any]] = {}
        for n in self.names:
            d = specs[n]
            line = waiters(active, n)
            ahead = [r for r in line if ticket is None or int(r.coord["service_wait"][n]) < ticket]
            need = len(ahead) + 1  # room for everyone ahead and us: then we overtake nobody
            in_line = f"service {n}: {len(ahead)} ahead in line (next: {ahead[0].instance_id})" if ahead else ""
            if ahead:
                wake_ids.add(ahead[-1].instance_id)
                watch.append(ahead[-1])
            conc = d.get("concurrent")
            if conc:
                hs = holders(active, n)
                used = sum(int(r.coord["service_hold"][n]) for r in hs)
                if used + need > int(conc):
                    blocked.append(in_line or f"service {n}: {used}/{conc} in use")
                    if used + need - 1 <= int(conc) or not ahead:  # one end lets us in
                        wake_ids.update(r.instance_id for r in hs)
                        watch.extend(hs)
                    continue
            if d.get("rates"):
                log = logs[n] = tx.get_setting(SERVICE_LOG, n) or {}
                starts = log.get("starts") or []
                room, nxt = rate_room(d, starts, now)
                if room < need:
                    if ahead:  # awake when our own slot comes, not one wake-up after another
                        blocked.append(in_line)
                        due = slot_time(d, starts, now, need)
                    else:
                        rates = ", ".join(r[2] for r in d["rates"])
                        blocked.append(f"service {n}: rate {rates}, next slot in {max((nxt or now) - now, 0):.1f}s")
                        due = nxt or now
                    if due > now:
                        timer = due - now if timer is None else min(timer, due - now)
                    continue
            if ahead and not conc and not d.get("rates"):
                blocked.append(in_line)  # (a definition without limits cannot be stored)
        if not blocked:
            for n in self.names:
                d = specs[n]
                if d.get("rates") or d.get("concurrent"):
                    log = logs[n] if n in logs else tx.get_setting(SERVICE_LOG, n) or {}
                    record_start(tx, n, d, log, now, 1, me)
            others_wait = any(waiters(active, n) for n in self.names)
            run.coord.pop("service_wait", None)
            run.coord["service_hold"] = {n: 1 for n in self.names}
            run.coord["service_at"] = now
            run.stage = Stage.RUNNING
            if run.state is State.WAITING:
                run.detail = None
            tx.update(run)
            if others_wait:
                tx.publish_after_commit(Event("admitted", run.copy(), detail={"services": self.names}))
            return True
        first = ticket is None
        if first:
            ticket = take_ticket(tx)
            run.coord["service_ticket"] = ticket
            run.coord["service_since"] = now  # when it began to wait (environment clock)
            run.coord["service_wait"] = {n: ticket for n in self.names}
        detail = "WAITING " + "; ".join(blocked)
        if run.state is not State.WAITING or run.detail != detail or first:
            was = run.state is State.WAITING
            run.stage, run.state, run.detail = Stage.RUNNING, State.WAITING, detail
            tx.update(run)
            if not was:
                tx.publish_after_commit(Event("waiting", run.copy(), detail={"services": self.names}))
        with self._lock:
            self._wake_ids = wake_ids
        ctx.watch_leases(watch)
        if timer is not None:
            return max(timer, 0.0) + 0.0005  # a hair late, never early
        return None
