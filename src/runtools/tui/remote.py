"""`taro dash -H TARGET[,TARGET...]`: the dashboard over many hosts, `taro serve` (http) or ssh.

The few things the dashboard asks of an environment, answered by each host: active runs, the
newest ended runs, live events, control (stop, approve, deny) and a run's output.
- http(s) targets: the host's JSON API and its SSE event stream (docs/serve.md). A stream that
  drops is opened again with `Last-Event-ID`, so what happened in between is sent from the
  server's ring of recent events; when the server cannot (it restarted, or its ring moved on:
  an SSE `reset`), the host's runs are read again.
- ssh targets: the host's own `taro` over the system ssh, as `taro -H` does: `ps --json`,
  `history --json`, `stop`/`approve`/`deny`, `tail -f`, and one `taro listen --json` process per
  host for the events. `taro listen` has no resume position: when it ends (the connection
  dropped), it is started again and the host's runs are read again.
Hosts are asked in parallel; a host that does not answer is reported on the dashboard and left
out, the others go on.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

from runtools.model.events import Event
from runtools.model.run import RunRecord
from runtools.remote.fanout import parallel
from runtools.remote.fanout import record as run_record  # a run's public JSON as a RunRecord


class RemoteSubscription:
    """Each host's events, followed by a thread per host (see the module doc for reconnects)."""

    def __init__(self, env: RemoteEnv) -> None:
        self.env = env
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.closed = False
        self.stopped = threading.Event()
        self.last: dict[str, str] = {}  # http target -> the last event id seen (resume point)
        self.procs: dict[str, subprocess.Popen] = {}  # ssh target -> its `taro listen`
        self.lock = threading.Lock()
        for t in env.targets:
            follow = self._follow_ssh if t.kind == "ssh" else self._follow
            threading.Thread(target=follow, args=(t,), daemon=True, name=f"dash-events-{t.text}").start()

    def _event(self, t: Any, data: dict[str, Any]) -> None:
        r = run_record(data["run"])
        self.env.where[r.instance_id] = t
        self.q.put(Event(data.get("event") or "", r))

    def _pause(self) -> None:
        from runtools.model.durations import wait_slice

        self.stopped.wait(wait_slice(1.0))  # the server's `retry`; close() ends it at once

    def _follow(self, t: Any) -> None:
        from runtools.remote.clients import sse_messages

        while not self.closed:
            try:
                last = self.last.get(t.text)
                for kind, eid, data in sse_messages(self.env.http(t).raw("/api/events", [("last_event_id", last)])):
                    if self.closed:
                        return
                    if kind == "reset":
                        self._reread(t)
                    elif kind == "message" and data is not None:
                        self._event(t, data)
                    if eid:
                        self.last[t.text] = eid
            except Exception as e:
                self.env.problem(t, f"events: {e}")
            if not self.closed:  # the stream dropped: open it again, from where it was
                self._pause()

    def _follow_ssh(self, t: Any) -> None:
        again = False
        while not self.closed:
            try:
                proc = self.env.ssh(t).spawn(["listen", "--json"])
                with self.lock:
                    if self.closed:
                        _end(proc)
                        return
                    self.procs[t.text] = proc
                if again:  # events of the gap cannot be asked for: read the host's runs again
                    self._reread(t)
                assert proc.stdout is not None
                for line in proc.stdout:
                    if self.closed:
                        return
                    try:
                        data = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(data, dict) and isinstance(data.get("run"), dict):
                        self._event(t, data)
                code = proc.wait()
                why = proc.stderr.read().decode("utf-8", "replace").strip().splitlines() if proc.stderr else []
                _end(proc)
                if not self.closed:
                    self.env.problem(t, f"events: taro listen ended ({why[-1] if why else f'exit {code}'})")
            except Exception as e:
                self.env.problem(t, f"events: {e}")
            again = True
            if not self.closed:
                self._pause()

    def _reread(self, t: Any) -> None:
        """What the host has now, as events: the events missed could not be sent."""
        for active in (True, False):
            for d in self.env.fetch_runs(t, active, 200, None):
                r = run_record(d)
                self.env.where[r.instance_id] = t
                self.q.put(Event("reset", r))

    def get(self, timeout: float | None = None) -> Event | None:
        try:
            item = self.q.get(timeout=timeout)
        except queue.Empty:
            return None
        return item if isinstance(item, Event) else None

    def wake(self) -> None:
        self.q.put(None)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            procs = list(self.procs.values())
        self.stopped.set()
        for p in procs:
            _end(p)
        self.wake()

    def __enter__(self) -> RemoteSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _end(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
    for f in (p.stdout, p.stderr):
        if f is not None:
            f.close()


#: the dashboard's control operations as the remote taro's verbs (ssh targets)
_VERBS = {"stop": ["stop", "-f"], "approve": ["approve"], "deny": ["deny"]}


class RemoteEnv:
    def __init__(self, hosts: list[str], timeout: float = 10.0) -> None:
        from runtools.remote.targets import config, expand, remote_taro, ssh_options, token

        cfg = config()
        self.targets = expand(hosts, cfg)
        self.token = token(cfg)
        self.taro = remote_taro(cfg)
        self.ssh_opts = ssh_options(cfg)
        self.timeout = timeout
        self.name = ",".join(t.text for t in self.targets)
        self.where: dict[str, Any] = {}  # instance id -> target
        self.problems: queue.SimpleQueue = queue.SimpleQueue()  # (target, why) for the screen

    def http(self, t: Any) -> Any:
        from runtools.remote.clients import Http

        return Http(t, self.token, self.timeout)

    def ssh(self, t: Any) -> Any:
        from runtools.remote.clients import Ssh

        return Ssh(t, self.taro, self.ssh_opts, self.timeout)

    def problem(self, t: Any, why: str) -> None:
        self.problems.put(f"{t.text}: {why}")

    fail = problem  # what fanout.parallel calls for a host that fails or does not answer in time

    def _each(self, fn: Any) -> list[tuple[Any, Any]]:
        """fn(target) on every host at once; failures go to `problems`, their hosts left out."""
        return parallel(self, fn, self.timeout)

    @staticmethod
    def _patterns(matcher: Any) -> list[str]:
        if matcher is None:
            return []
        return [*matcher.include, *("!" + p for p in matcher.exclude)]

    def fetch_runs(self, t: Any, active: bool, limit: int, matcher: Any) -> list[dict[str, Any]]:
        """The public JSON of one host's active runs, or of its newest `limit` ended runs."""
        patterns = self._patterns(matcher)
        if t.kind == "ssh":
            if active:
                return self.ssh(t).json(["ps", "--json", *patterns])
            return self.ssh(t).json(["history", "--json", "-n", str(limit), *patterns])
        params: list[tuple[str, Any]] = [("active", "true" if active else "false"),
                                         ("limit", "100000" if active else limit)]
        return self.http(t).get("/api/runs", params + [("pattern", p) for p in patterns])

    def _runs(self, active: bool, limit: int, matcher: Any) -> list[RunRecord]:
        runs = []
        for t, items in self._each(lambda t: self.fetch_runs(t, active, limit, matcher)):
            for d in items:
                r = run_record(d)
                self.where[r.instance_id] = t
                runs.append(r)
        return runs

    # -- what the dashboard uses ---------------------------------------------------------------
    def active_runs(self, matcher: Any = None) -> list[RunRecord]:
        return self._runs(True, 0, matcher)

    def find_runs(self, q: Any) -> list[RunRecord]:
        runs = self._runs(False, q.limit or 200, q._matcher)
        runs.sort(key=lambda r: r.created_at, reverse=True)
        return runs[: q.limit] if q.limit else runs

    def subscribe(self) -> RemoteSubscription:
        return RemoteSubscription(self)

    def remote_control(self, r: RunRecord, op: str, by: str) -> dict[str, Any]:
        from runtools.remote.clients import HostError, Http

        t = self.where.get(r.instance_id)
        if t is None:
            return {"ok": False, "error": "which host runs it is not known"}
        if t.kind == "ssh":
            code, _out, err = self.ssh(t).run([*_VERBS[op], r.instance_id])
            if code != 0:
                lines = err.decode("utf-8", "replace").strip().splitlines()
                raise HostError(lines[-1] if lines else f"taro {op} exited {code}")
            return {"ok": True}
        body: dict[str, Any] = {}
        res = self.http(t).post(Http.run_path(r.instance_id, f"/{op}"), body)
        return {"ok": True, **(res if isinstance(res, dict) else {})}

    def remote_output(self, r: RunRecord, lines: int, follow: bool) -> Iterator[bytes]:
        """Lines of the run's stdout: the last `lines`, then (follow) as they come."""
        from runtools.remote.clients import Http

        t = self.where.get(r.instance_id)
        if t is None:
            return iter(())
        if t.kind == "ssh":
            return self._ssh_output(t, r, lines, follow)
        params = [("stream", "stdout"), ("tail", lines), ("follow", "true" if follow else None)]
        return self.http(t).raw(Http.run_path(r.instance_id, "/output"), params)

    def _ssh_output(self, t: Any, r: RunRecord, lines: int, follow: bool) -> Iterator[bytes]:
        args = ["tail", "-n", str(lines), "--stream", "stdout", *(["-f"] if follow else []), r.instance_id]
        proc = self.ssh(t).spawn(args)
        try:
            assert proc.stdout is not None
            yield from proc.stdout
        finally:  # the run's screen closed, or the run ended
            _end(proc)

    def close(self) -> None:
        pass

    def __enter__(self) -> RemoteEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
