"""The server going away when a run ends: the wrapper keeps trying to record the end (with
backoff, for $RUNTOOLS_PG_END_WAIT, default 600 s) — longer than an ordinary operation waits for
the server ($RUNTOOLS_PG_RECONNECT_WAIT, 15 s by default; 1 s here to keep the tests fast). If
others ended the run LOST meanwhile, its real end replaces that, and says so."""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import threading
import time

from .server import Server, postgres_url, server
from .test_postgres_leases import executing

FAST = {"RUNTOOLS_PG_RECONNECT_WAIT": "1"}  # the bound that used to end the wrapper's attempts


def keeps_trying(proc: subprocess.Popen, seconds: float) -> None:
    """The server stays away for `seconds`: the wrapper must still be trying all along."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)  # the length of the outage is the scenario, not a stand-in for a condition


def test_the_end_is_recorded_after_the_server_was_away_longer_than_an_operation_waits(cli, wait_until):
    own = Server()
    try:
        own.start()
        url = own.url("away")
        a = cli.spawn_run("-e", url, "-x", "--id", "job", "--", "sh", "-c", "read _ || :; exit 3",
                          stdin=subprocess.PIPE, env={"RUNTOOLS_HOST": "host-a", **FAST})
        (run,) = wait_until(lambda: executing(cli, url), 15, "the run to execute")
        own.stop_process()
        cli.release(a)  # the command ends while the server is away
        wait_until(lambda: not os.path.exists(f"/proc/{run['child_pid']}"), 10, "the command to end")
        keeps_trying(a, 6.0)  # with 1 s per attempt, the 3 attempts of before were over after ~3.5 s
        assert own._launch()
        assert a.wait(30) == 3, a.stderr.read()
        (ended,) = cli.history("-e", url)
        assert (ended["status"], ended["exit_code"], ended["error"], ended["warnings"]) == ("FAILED", 3, None, [])
    finally:
        own.stop()


class Proxy:
    """A TCP forwarder to the test server that can be cut (every connection closed, new ones
    refused) and resumed on the same port: a host that loses the server while the server lives on."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = self._listen(0)
        self.port = self.listener.getsockname()[1]
        self.pairs: dict[socket.socket, socket.socket] = {}
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ)
        self.lock = threading.Lock()
        self.done = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    @staticmethod
    def _listen(port: int) -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(64)
        return s

    def _loop(self) -> None:
        while not self.done:
            with self.lock:
                ready = self.sel.select(0.05)
                for key, _ in ready:
                    sock = key.fileobj
                    if sock is self.listener:
                        client, _addr = sock.accept()
                        upstream = socket.create_connection(("127.0.0.1", self.target))
                        self.pairs[client], self.pairs[upstream] = upstream, client
                        self.sel.register(client, selectors.EVENT_READ)
                        self.sel.register(upstream, selectors.EVENT_READ)
                        continue
                    if sock not in self.pairs:
                        continue
                    try:
                        data = sock.recv(65536)
                        if data:
                            self.pairs[sock].sendall(data)
                            continue
                    except OSError:
                        pass
                    self._drop(sock)
            time.sleep(0)

    def _drop(self, sock: socket.socket) -> None:
        other = self.pairs.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            self.pairs.pop(s, None)
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()

    def cut(self) -> None:
        with self.lock:
            for s in list(self.pairs):
                self._drop(s)
            self.sel.unregister(self.listener)
            self.listener.close()

    def resume(self) -> None:
        with self.lock:
            self.listener = self._listen(self.port)
            self.sel.register(self.listener, selectors.EVENT_READ)

    def close(self) -> None:
        self.cut()
        self.done = True
        self.thread.join(5)


def test_a_run_ended_lost_while_its_host_was_cut_off_gets_its_real_end_with_a_warning(cli, wait_until):
    server()
    url = postgres_url()  # as the other hosts reach the server
    proxy = Proxy(server().port)
    try:
        cut_off = url.replace(f":{server().port}/", f":{proxy.port}/")  # host A's way to the server
        a = cli.spawn_run("-e", cut_off, "-x", "--id", "job", "--", "sh", "-c", "read _ || :",
                          stdin=subprocess.PIPE, env={"RUNTOOLS_HOST": "host-a", **FAST})
        (run,) = wait_until(lambda: executing(cli, url), 15, "the run to execute")
        listen = cli.spawn(["taro", "listen", "-e", url, "--json"])
        wait_until(lambda: _pg_listeners(url), 10, "taro listen to subscribe")
        proxy.cut()
        cli.release(a)  # the command ends; its wrapper cannot reach the server
        # the server saw host A's sessions close: its lease and control key are free, and the
        # next look from another host ends the run LOST
        wait_until(lambda: [r["status"] for r in cli.history("-e", url)] == ["LOST"], 15, "the run to be LOST")
        keeps_trying(a, 2.0)
        proxy.resume()
        assert a.wait(60) == 0, a.stderr.read()  # the command's own code
        (ended,) = cli.history("-e", url)
        assert (ended["status"], ended["exit_code"], ended["host"]) == ("COMPLETED", 0, "host-a")
        assert len(ended["warnings"]) == 1 and "recorded late" in ended["warnings"][0]
        assert "had ended the run LOST" in ended["warnings"][0]
        late = ended["actions"][-1]
        assert (late["action"], late["by"], late["was"]) == ("end-recorded-late", "wrapper", "LOST")

        def ends() -> list[dict]:
            return [e for e in _events(listen) if e["event"] == "ended"]

        got = wait_until(lambda: len(ends()) >= 2 and ends(), 10, "both ends to be told")
        assert [(e["status"], e["detail"]) for e in got] == [
            ("LOST", None), ("COMPLETED", {"late": True, "was": "LOST"})]
        assert run["instance_id"] == got[1]["instance_id"]
    finally:
        proxy.close()


_seen: dict[int, list[dict]] = {}


def _events(proc: subprocess.Popen) -> list[dict]:
    """The NDJSON lines `taro listen` printed so far (read without blocking)."""
    got = _seen.setdefault(proc.pid, [])
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    buf = getattr(proc, "_buf", b"")
    try:
        while chunk := os.read(fd, 65536):
            buf += chunk
    except BlockingIOError:
        pass
    *lines, buf = buf.split(b"\n")
    proc._buf = buf
    got.extend(json.loads(line) for line in lines if line.strip())
    return got


def _pg_listeners(url: str) -> int:
    from .server import listeners

    return listeners(url)
