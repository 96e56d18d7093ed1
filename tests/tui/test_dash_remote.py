"""taro dash -H: one dashboard over two `taro serve` hosts (their JSON API and SSE events)."""

from __future__ import annotations

import asyncio
import os

import pytest

import remote.test_many_hosts as _many_hosts

pytest.importorskip("textual")
pytest.importorskip("starlette")

from runtools.model.status import State
from runtools.tui.app import DashApp, RunScreen
from runtools.tui.remote import RemoteEnv
from server._serve import OPERATE, Served

from .test_dash import rows, until

sshd = _many_hosts.sshd  # the real sshd fixture of tests/remote


def test_dash_over_two_hosts(cli, tmp_path, monkeypatch):
    env_a, env_b = tmp_path / "env-a", tmp_path / "env-b"
    assert cli.run("-e", str(env_a), "--id", "job-a", "--", "echo", "a").returncode == 0
    assert cli.run("-e", str(env_b), "--id", "job-b", "--", "false").returncode == 1
    a = Served(cli, tmp_path, "-e", str(env_a))
    b = Served(cli, tmp_path, "-e", str(env_b))
    gated = cli.spawn_run("-e", str(env_b), "--id", "gate", "--approval", "boss", "--", "sh", "-c",
                          "echo hello from b; sleep 30")
    monkeypatch.setenv("RUNTOOLS_TOKEN", OPERATE)

    async def main() -> None:
        with RemoteEnv([f"{a.url},{b.url}"]) as env:
            app = DashApp(env, env_name=env.name)
            async with app.run_test(size=(140, 30)) as pilot:
                await until(pilot, lambda: len(rows(app, "active")) == 1, what="the pending run of host b")
                iid = rows(app, "active")[0]
                assert iid.startswith("gate@") and app.active[iid].state is State.PENDING
                assert sorted(r.split("@")[0] for r in rows(app, "history")) == ["job-a", "job-b"]
                await pilot.press("a")
                await until(pilot, lambda: iid in app.active and app.active[iid].state is State.EXECUTING,
                            what="EXECUTING after approve over HTTP")
                await pilot.press("enter")
                assert isinstance(app.screen, RunScreen)
                log = app.screen.query_one("#output")
                await until(pilot, lambda: any("hello from b" in str(x.text) for x in log.lines), what="output")
                await pilot.press("s")
                await pilot.press("y")
                await until(pilot, lambda: iid not in app.active, what="stopped over HTTP")
                await pilot.press("escape")
                assert rows(app, "history")[0] == iid
                await pilot.press("q")

    try:
        asyncio.run(main())
        assert gated.wait(timeout=30) == 143
        run = cli.history("gate", "-e", str(env_b))[0]
        assert run["status"] == "STOPPED"
    finally:
        a.stop()
        b.stop()


def test_dash_over_ssh(cli, tmp_path, home, sshd, monkeypatch):
    """An ssh target: the host's own taro over a real sshd (ps, history, listen, approve, tail -f,
    stop); its `taro listen` killed mid-way is started again and the host's runs read again."""
    far = tmp_path / "far-taro"  # the far side of ssh: this venv's taro in the test's home
    far.write_text("#!/bin/sh\n"
                   f"export RUNTOOLS_HOME='{home}' XDG_RUNTIME_DIR='{os.environ['XDG_RUNTIME_DIR']}'\n"
                   f"exec '{cli.bin('taro')}' \"$@\"\n")
    far.chmod(0o755)
    target, opts = sshd
    monkeypatch.setenv("RUNTOOLS_REMOTE_TARO", str(far))
    monkeypatch.setenv("RUNTOOLS_SSH_OPTS", opts)
    assert cli.run("--id", "job-s", "--", "echo", "s").returncode == 0
    gated = cli.spawn_run("--id", "gate", "--approval", "boss", "--", "sh", "-c", "echo hello over ssh; sleep 30")
    cli.wait_state("gate", "PENDING")

    async def main() -> None:
        with RemoteEnv([target]) as env:
            app = DashApp(env, env_name=env.name)
            async with app.run_test(size=(140, 30)) as pilot:
                await until(pilot, lambda: len(rows(app, "active")) == 1, what="the pending run over ssh")
                iid = rows(app, "active")[0]
                assert iid.startswith("gate@") and app.active[iid].state is State.PENDING
                assert [r.split("@")[0] for r in rows(app, "history")] == ["job-s"]
                await until(pilot, lambda: cli.listeners() >= 1, what="the remote taro listen")
                await pilot.press("a")
                await until(pilot, lambda: iid in app.active and app.active[iid].state is State.EXECUTING,
                            timeout=20, what="EXECUTING after approve over ssh")
                await pilot.press("enter")
                assert isinstance(app.screen, RunScreen)
                log = app.screen.query_one("#output")
                await until(pilot, lambda: any("hello over ssh" in str(x.text) for x in log.lines), timeout=20,
                            what="output over ssh")
                await pilot.press("escape")
                # the remote listen dies (a dropped connection): started again, the runs read again
                (listen,) = app.sub.procs.values()
                listen.kill()
                assert cli.run("--id", "gap", "--", "true").returncode == 0
                await until(pilot, lambda: any(r.startswith("gap@") for r in rows(app, "history")), timeout=20,
                            what="the run that ended while no listen ran")
                await until(pilot, lambda: iid in rows(app, "active"), what="the active run still shown")
                app.query_one("#active").focus()
                await pilot.press("s")
                await pilot.press("y")
                await until(pilot, lambda: iid not in app.active, timeout=20, what="stopped over ssh")
                await pilot.press("q")

    asyncio.run(main())
    assert gated.wait(timeout=30) == 143
    assert cli.history("gate")[0]["status"] == "STOPPED"


class CuttableProxy:
    """A TCP proxy in front of a `taro serve`: `cut()` drops every connection and refuses new ones
    until `resume()`; `requests` holds the first bytes each client sent, `replies` what came back."""

    def __init__(self, upstream_port: int) -> None:
        import socket
        import threading

        self.upstream = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.refusing = False
        self.conns: list = []
        self.requests: list[bytes] = []
        self.replies: list[bytearray] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.upstream))
            reply = bytearray()
            with self.lock:
                self.conns += [client, server]
                self.replies.append(reply)
            threading.Thread(target=self._pump, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, reply), daemon=True).start()

    def _pump(self, src, dst, reply) -> None:
        first = True
        while True:
            try:
                data = src.recv(65536)
                if not data:
                    break
                if reply is None and first:
                    with self.lock:
                        self.requests.append(data)
                    first = False
                elif reply is not None:
                    reply.extend(data)
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    def events_requests(self) -> list[str]:
        return [r.split(b"\r\n", 1)[0].decode() for r in self.requests if b"/api/events" in r.split(b"\r\n", 1)[0]]

    def cut(self) -> None:
        import socket

        self.refusing = True
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def resume(self) -> None:
        self.refusing = False

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_a_dropped_event_stream_resumes_with_last_event_id(cli, tmp_path, monkeypatch):
    """The stream to the host drops; runs end meanwhile; the dashboard reconnects with
    Last-Event-ID and shows them — sent by the server from its ring, not read again."""
    import threading

    import httpx

    env_a = tmp_path / "env-a"
    assert cli.run("-e", str(env_a), "--id", "before", "--", "true").returncode == 0
    a = Served(cli, tmp_path, "-e", str(env_a))
    proxy = CuttableProxy(int(a.url.rsplit(":", 1)[1]))
    monkeypatch.setenv("RUNTOOLS_TOKEN", OPERATE)
    seen_by_server: list[str] = []  # a direct stream: the server has the gap's events in its ring

    def direct() -> None:
        try:
            with httpx.Client(base_url=a.url, headers={"Authorization": f"Bearer {OPERATE}"}, timeout=None) as c, \
                    c.stream("GET", "/api/events") as resp:
                for line in resp.iter_lines():
                    seen_by_server.append(line)
        except httpx.HTTPError:  # the server stops at the end of the test
            pass

    async def main() -> None:
        with RemoteEnv([proxy.url]) as env:
            app = DashApp(env, env_name=env.name)
            async with app.run_test(size=(140, 30)) as pilot:
                await until(pilot, lambda: any(r.startswith("before@") for r in rows(app, "history")),
                            what="the history of the host")
                await until(pilot, lambda: len(proxy.events_requests()) == 1, what="the event stream")
                threading.Thread(target=direct, daemon=True).start()
                await until(pilot, lambda: seen_by_server, what="a direct stream of the server")
                proxy.cut()  # the stream drops; the dashboard cannot connect again for now
                for job in ("gap-1", "gap-2"):
                    assert cli.run("-e", str(env_a), "--id", job, "--", "true").returncode == 0
                await until(pilot, lambda: len([x for x in seen_by_server if '"ended"' in x]) >= 2,
                            what=f"the server to see the gap's runs end: {seen_by_server}")
                assert not any(r.startswith("gap-") for r in rows(app, "history"))
                proxy.resume()
                await until(pilot, lambda: {r.split("@")[0] for r in rows(app, "history")} >= {"gap-1", "gap-2"},
                            timeout=20, what="the runs that ended during the gap")
                await pilot.press("q")

    try:
        asyncio.run(main())
        first, *again = proxy.events_requests()
        assert "last_event_id" not in first
        assert again and "last_event_id=" in again[-1], again  # resumed from where it was
        assert not any(b"event: reset" in bytes(r) for r in proxy.replies)  # sent from the ring, not read again
    finally:
        proxy.close()
        a.stop()
