"""Control of a live local run over its own Unix stream socket (in an owner-only directory).

Requests are one JSON line, answered by one JSON line. `{"op": "follow"}` turns the
connection into an output stream: the answer carries the byte offsets already stored, then
frames `<stream byte><4-byte length><chunk>` follow until the run ends. The server side uses
`_socket`/`_thread` because it starts with every run.
"""

from __future__ import annotations

import _thread
import os
from _socket import AF_UNIX, SHUT_RDWR, SOCK_STREAM, socket

from runtools.env.base import ControlEndpoint
from runtools.errors import NotFoundError
from runtools.model.jsonenc import dumps

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from runtools.env.base import ControlHandler

_STREAMS = {"stdout": b"o", "stderr": b"e"}
_NAMES = {v: k for k, v in _STREAMS.items()}
MAX_REQUEST = 1 << 20


def _readline(conn: socket) -> bytes:
    buf = b""
    while not buf.endswith(b"\n") and len(buf) < MAX_REQUEST:
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def _sendall(conn: socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[conn.send(view) :]


class ControlServer(ControlEndpoint):
    def __init__(self, path: str, handler: ControlHandler, offsets: dict[str, int]) -> None:
        self.path = path
        self.handler = handler
        self.offsets = offsets  # bytes stored per stream, kept current by `output`
        self._followers: list[socket] = []
        self._lock = _thread.allocate_lock()
        self._inflight: set = set()  # one held lock per request being answered
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.sock = socket(AF_UNIX, SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        self.sock.listen(16)
        self._closed = False
        _thread.start_new_thread(self._serve, ())

    def _serve(self) -> None:
        while True:
            try:
                fd, _ = self.sock._accept()  # type: ignore[attr-defined]  # _socket's accept
            except OSError:
                return
            _thread.start_new_thread(self._handle, (socket(AF_UNIX, SOCK_STREAM, 0, fd),))

    def _handle(self, conn: socket) -> None:
        done = _thread.allocate_lock()
        done.acquire()
        with self._lock:
            self._inflight.add(done)
        try:
            self._answer(conn)
        finally:
            with self._lock:
                self._inflight.discard(done)
            done.release()

    def _answer(self, conn: socket) -> None:
        import json

        try:
            conn.settimeout(5)
            req = json.loads(_readline(conn))
            if req.get("op") == "follow":
                with self._lock:
                    _sendall(conn, dumps({"ok": True, "offsets": dict(self.offsets)}).encode() + b"\n")
                    conn.settimeout(2)
                    self._followers.append(conn)
                return
            try:
                resp = self.handler(req)
            except Exception as e:  # the answer must reach the caller, whatever happened
                resp = {"ok": False, "error": str(e)}
            _sendall(conn, json.dumps(resp).encode() + b"\n")
        except (OSError, ValueError, AttributeError):
            pass
        conn.close()

    def output(self, stream: str, data: bytes) -> None:
        with self._lock:
            self.offsets[stream] = self.offsets.get(stream, 0) + len(data)
            if not self._followers:
                return
            frame = _STREAMS[stream] + len(data).to_bytes(4, "big") + data
            for c in list(self._followers):
                try:
                    _sendall(c, frame)
                except OSError:  # slow or gone follower: drop it, never stall the run
                    self._followers.remove(c)
                    c.close()

    def rebase(self, stream: str, end: int) -> None:
        with self._lock:
            self.offsets[stream] = end

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            os.unlink(self.path)
        except OSError:
            pass
        # close() alone does not wake a thread blocked in accept() on Linux: shutdown() does
        # (EINVAL), so the serving thread ends instead of outliving the run.
        try:
            self.sock.shutdown(SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self._lock:
            inflight = list(self._inflight)
        for done in inflight:  # a request that ended the run (stop) still gets its answer
            if done.acquire(timeout=1.0):
                done.release()
        with self._lock:
            for c in self._followers:
                try:
                    c.shutdown(SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self._followers.clear()


def _connect(path: str, instance_id: str, timeout: float):  # -> socket.socket
    import socket as _s

    s = _s.socket(_s.AF_UNIX, _s.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        s.close()
        raise NotFoundError(f"run {instance_id} is not running (no control socket)") from None
    return s


def request(path: str, instance_id: str, req: dict[str, Any], timeout: float) -> dict[str, Any]:
    import json

    s = _connect(path, instance_id, timeout)
    try:
        s.sendall(json.dumps(req).encode() + b"\n")
        line = s.makefile("rb").readline(MAX_REQUEST)
    except OSError:
        raise NotFoundError(f"run {instance_id} did not answer (it may have just ended)") from None
    finally:
        s.close()
    if not line:
        raise NotFoundError(f"run {instance_id} did not answer (it may have just ended)")
    return json.loads(line)


def follow(path: str, instance_id: str) -> Iterator[tuple[str, bytes | dict]]:
    import json

    s = _connect(path, instance_id, 5)
    try:
        s.sendall(b'{"op": "follow"}\n')
        f = s.makefile("rb")
        head = f.readline(MAX_REQUEST)
        if not head:
            return
        yield "offsets", json.loads(head)["offsets"]
        s.settimeout(None)
        while True:
            hdr = f.read(5)
            if len(hdr) < 5:
                return
            data = f.read(int.from_bytes(hdr[1:], "big"))
            yield _NAMES.get(hdr[:1], "stdout"), data
    except OSError:
        return
    finally:
        s.close()
