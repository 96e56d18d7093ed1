"""`taro dash -H TARGET[,TARGET...]`: the dashboard over `taro serve` hosts (HTTP targets).

The few things the dashboard asks of an environment, answered by each host's JSON API and its
SSE event stream (docs/serve.md): active runs, the newest ended runs, live events, control
(stop, approve, deny) and a run's output. Hosts are asked in parallel; a host that does not
answer is reported on the dashboard and left out, the others go on. SSH targets are not
supported here (their `taro listen` is one process per host; use http:// targets).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from runtools.errors import UsageError
from runtools.model.events import Event
from runtools.model.run import RunRecord
from runtools.remote.fanout import parallel
from runtools.remote.fanout import record as run_record  # a run's public JSON as a RunRecord


class RemoteSubscription:
    def __init__(self, env: RemoteEnv) -> None:
        self.env = env
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.closed = False
        for t in env.targets:
            threading.Thread(target=self._follow, args=(t,), daemon=True, name=f"dash-sse-{t.text}").start()

    def _follow(self, t: Any) -> None:
        from runtools.remote.clients import sse_events

        while not self.closed:
            try:
                for ev in sse_events(self.env.http(t).raw("/api/events")):
                    if self.closed:
                        return
                    r = run_record(ev["run"])
                    self.env.where[r.instance_id] = t
                    self.q.put(Event(ev.get("event") or "", r))
            except Exception as e:
                self.env.problem(t, f"events: {e}")
            if not self.closed:
                time.sleep(2.0)  # the server went away: connect again (Last-Event-ID resume is the server's)

    def get(self, timeout: float | None = None) -> Event | None:
        try:
            item = self.q.get(timeout=timeout)
        except queue.Empty:
            return None
        return item if isinstance(item, Event) else None

    def wake(self) -> None:
        self.q.put(None)

    def close(self) -> None:
        self.closed = True
        self.wake()

    def __enter__(self) -> RemoteSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteEnv:
    def __init__(self, hosts: list[str], timeout: float = 10.0) -> None:
        from runtools.remote.targets import config, expand, token

        cfg = config()
        self.targets = expand(hosts, cfg)
        ssh = [t.text for t in self.targets if t.kind != "http"]
        if ssh:
            raise UsageError(f"taro dash -H: {', '.join(ssh)} is not an http(s):// target of taro serve "
                             "(ssh targets are not supported by the dashboard)")
        self.token = token(cfg)
        self.timeout = timeout
        self.name = ",".join(t.text for t in self.targets)
        self.where: dict[str, Any] = {}  # instance id -> target
        self.problems: queue.SimpleQueue = queue.SimpleQueue()  # (target, why) for the screen

    def http(self, t: Any) -> Any:
        from runtools.remote.clients import Http

        return Http(t, self.token, self.timeout)

    def problem(self, t: Any, why: str) -> None:
        self.problems.put(f"{t.text}: {why}")

    fail = problem  # what fanout.parallel calls for a host that fails or does not answer in time

    def _each(self, fn: Any) -> list[tuple[Any, Any]]:
        """fn(target) on every host at once; failures go to `problems`, their hosts left out."""
        return parallel(self, fn, self.timeout)

    def _runs(self, params: list[tuple[str, Any]]) -> list[RunRecord]:
        runs = []
        for t, items in self._each(lambda t: self.http(t).get("/api/runs", params)):
            for d in items:
                r = run_record(d)
                self.where[r.instance_id] = t
                runs.append(r)
        return runs

    @staticmethod
    def _patterns(matcher: Any) -> list[tuple[str, str]]:
        if matcher is None:
            return []
        return [("pattern", p) for p in matcher.include] + [("pattern", "!" + p) for p in matcher.exclude]

    # -- what the dashboard uses ---------------------------------------------------------------
    def active_runs(self, matcher: Any = None) -> list[RunRecord]:
        return self._runs([("active", "true"), ("limit", "100000"), *self._patterns(matcher)])

    def find_runs(self, q: Any) -> list[RunRecord]:
        runs = self._runs([("active", "false"), ("limit", q.limit or 200), *self._patterns(q._matcher)])
        runs.sort(key=lambda r: r.created_at, reverse=True)
        return runs[: q.limit] if q.limit else runs

    def subscribe(self) -> RemoteSubscription:
        return RemoteSubscription(self)

    def remote_control(self, r: RunRecord, op: str, by: str) -> dict[str, Any]:
        from runtools.remote.clients import Http

        t = self.where.get(r.instance_id)
        if t is None:
            return {"ok": False, "error": "which host runs it is not known"}
        body: dict[str, Any] = {}
        res = self.http(t).post(Http.run_path(r.instance_id, f"/{op}"), body)
        return {"ok": True, **(res if isinstance(res, dict) else {})}

    def remote_output(self, r: RunRecord, lines: int, follow: bool) -> Any:
        """Lines of the run's stdout: the last `lines`, then (follow) as they come."""
        from runtools.remote.clients import Http

        t = self.where.get(r.instance_id)
        if t is None:
            return iter(())
        params = [("stream", "stdout"), ("tail", lines), ("follow", "true" if follow else None)]
        return self.http(t).raw(Http.run_path(r.instance_id, "/output"), params)

    def close(self) -> None:
        pass

    def __enter__(self) -> RemoteEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
