"""The `memory` environment: one process, no files. For tests and for embedding.

Leases live as long as the run object holds them; events and control are direct calls.
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
from collections.abc import Iterator
from typing import Any

from runtools.env.base import ControlEndpoint, ControlHandler, Environment, Lease, RunQuery, Subscription, Tx
from runtools.errors import NotFoundError
from runtools.model.events import Event
from runtools.model.run import RunRecord
from runtools.model.status import Stage, Status


class _MemLease(Lease):
    def __init__(self, env: MemoryEnvironment, iid: str) -> None:
        self.env, self.iid = env, iid
        self.released = threading.Event()
        env._leases[iid] = self

    def release(self) -> None:
        self.env._leases.pop(self.iid, None)
        self.released.set()


class _MemTx(Tx):
    def __init__(self, env: MemoryEnvironment) -> None:
        super().__init__()
        self.env = env

    def active_runs(self) -> list[RunRecord]:
        out = []
        for r in self.env._runs.values():
            if r.stage is Stage.ENDED:
                continue
            if r.instance_id not in self.env._leases:
                import time

                r.stage, r.status, r.ended_at = Stage.ENDED, Status.LOST, time.time()
                self.publish_after_commit(Event("ended", copy.deepcopy(r)))
                continue
            out.append(copy.deepcopy(r))
        return out

    def get(self, instance_id: str) -> RunRecord | None:
        r = self.env._runs.get(instance_id)
        return copy.deepcopy(r) if r else None

    def find(self, query: RunQuery) -> list[RunRecord]:
        return self.env._find(query)

    def insert(self, run: RunRecord) -> None:
        if run.instance_id in self.env._runs:
            raise ValueError(f"duplicate run {run.instance_id}")
        self.env._runs[run.instance_id] = copy.deepcopy(run)

    def update(self, run: RunRecord) -> None:
        self.env._runs[run.instance_id] = copy.deepcopy(run)

    def delete(self, instance_id: str) -> None:
        self.env._runs.pop(instance_id, None)

    def get_setting(self, kind: str, key: str) -> dict[str, Any] | None:
        v = self.env._settings.get(kind, {}).get(key)
        return copy.deepcopy(v)

    def put_setting(self, kind: str, key: str, value: dict[str, Any] | None) -> None:
        if value is None:
            self.env._settings.get(kind, {}).pop(key, None)
        else:
            self.env._settings.setdefault(kind, {})[key] = copy.deepcopy(value)

    def settings(self, kind: str) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(dict(sorted(self.env._settings.get(kind, {}).items())))


class _MemSub(Subscription):
    def __init__(self, env: MemoryEnvironment) -> None:
        self.env = env
        self.q: queue.Queue[Event | None] = queue.Queue()
        env._subs.append(self)

    def get(self, timeout: float | None = None) -> Event | None:
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            return None

    def wake(self) -> None:
        self.q.put(None)

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.env._subs.remove(self)


class _MemEndpoint(ControlEndpoint):
    def __init__(self, env: MemoryEnvironment, iid: str, handler: ControlHandler) -> None:
        self.env, self.iid, self.handler = env, iid, handler
        self.followers: list[queue.Queue] = []
        self.offsets = {"stdout": 0, "stderr": 0}
        self.lock = threading.Lock()
        env._endpoints[iid] = self

    def output(self, stream: str, data: bytes) -> None:
        with self.lock:
            self.offsets[stream] += len(data)
            for q in self.followers:
                q.put((stream, data))

    def rebase(self, stream: str, end: int) -> None:
        with self.lock:
            self.offsets[stream] = end

    def close(self) -> None:
        self.env._endpoints.pop(self.iid, None)
        with self.lock:
            for q in self.followers:
                q.put(None)


class MemoryEnvironment(Environment):
    def __init__(self, name: str = "memory", directory: str | None = None) -> None:
        self.name = name
        self.dir = directory  # output files go here when given, else to a temp dir
        self._runs: dict[str, RunRecord] = {}
        self._settings: dict[str, dict[str, dict[str, Any]]] = {}
        self._leases: dict[str, _MemLease] = {}
        self._subs: list[_MemSub] = []
        self._endpoints: dict[str, _MemEndpoint] = {}
        self._lock = threading.RLock()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock:
            snapshot = copy.deepcopy((self._runs, self._settings))
            tx = _MemTx(self)
            try:
                yield tx
            except BaseException:
                self._runs, self._settings = snapshot
                raise
        for ev in tx.events:
            self.publish(ev)

    def _find(self, q: RunQuery) -> list[RunRecord]:
        runs = list(self._runs.values())
        out = []
        for r in runs:
            if (q.active is True and not r.active) or (q.active is False and r.active):
                continue
            if (q.since is not None and r.created_at < q.since) or (q.until is not None and r.created_at >= q.until):
                continue
            if q.statuses and r.status not in q.statuses:
                continue
            if q.outcomes and (r.status is None or r.status.outcome not in q.outcomes):
                continue
            if q.run_key is not None and r.run_key != q.run_key:
                continue
            if q.job_id is not None and r.job_id != q.job_id:
                continue
            if not q.matcher(r):
                continue
            out.append(copy.deepcopy(r))
        out.sort(key=lambda r: r.created_at, reverse=not q.ascending)
        if q.last_per_job:
            seen: set[str] = set()
            latest = []
            for r in sorted(out, key=lambda r: r.created_at, reverse=True):
                if r.job_id not in seen:
                    seen.add(r.job_id)
                    latest.append(r)
            out = sorted(latest, key=lambda r: r.created_at, reverse=not q.ascending)
        return out[: q.limit] if q.limit is not None else out

    def find_runs(self, query: RunQuery) -> list[RunRecord]:
        with self._lock:
            return self._find(query)

    def lease(self, run: RunRecord) -> Lease:
        return _MemLease(self, run.instance_id)

    def wait_lease(self, run: RunRecord, timeout: float | None) -> bool:
        lease = self._leases.get(run.instance_id)
        return True if lease is None else lease.released.wait(timeout)

    def publish(self, event: Event) -> None:
        for s in list(self._subs):
            s.q.put(Event(event.event, copy.deepcopy(event.run), event.timestamp, event.detail))

    def subscribe(self) -> Subscription:
        return _MemSub(self)

    def serve_control(self, run: RunRecord, handler: ControlHandler) -> ControlEndpoint:
        return _MemEndpoint(self, run.instance_id, handler)

    def control(self, instance_id: str, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        ep = self._endpoints.get(instance_id)
        if ep is None:
            raise NotFoundError(f"run {instance_id} is not running")
        return ep.handler(request)

    def follow_output(self, instance_id: str) -> Iterator[tuple[str, bytes | dict]]:
        ep = self._endpoints.get(instance_id)
        if ep is None:
            raise NotFoundError(f"run {instance_id} is not running")
        q: queue.Queue = queue.Queue()
        with ep.lock:
            ep.followers.append(q)
            offsets = dict(ep.offsets)

        def gen() -> Iterator[tuple[str, bytes | dict]]:
            yield "offsets", offsets
            while (item := q.get()) is not None:
                yield item

        return gen()

    def output_paths(self, run: RunRecord) -> tuple[str, str]:
        import os
        import tempfile

        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix="runtools-memory-")
        d = os.path.join(self.dir, "output", run.job_id)
        os.makedirs(d, mode=0o700, exist_ok=True)
        base = os.path.join(d, run.run_id)
        return base + ".stdout", base + ".stderr"
