"""Control of a live local run over its own Unix stream socket (owner-only directory).

Requests are one JSON line, answered by one JSON line. `{"op": "follow"}` turns the
connection into an output stream: the answer carries the byte offsets already stored, then
frames `<stream byte><4-byte length><chunk>` follow until the run ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

from runtools.env.base import ControlEndpoint, ControlHandler
from runtools.errors import NotFoundError

_STREAMS = {"stdout": b"o", "stderr": b"e"}
_NAMES = {v: k for k, v in _STREAMS.items()}


class ControlServer(ControlEndpoint):
    def __init__(self, path: str, handler: ControlHandler, offsets: dict[str, int]) -> None:
        self.path = path
        self.handler = handler
        self.offsets = offsets  # bytes stored per stream, kept current by `output`
        self._followers: list[socket.socket] = []
        self._lock = threading.Lock()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        self.sock.listen(16)
        self._closed = False
        threading.Thread(target=self._serve, daemon=True, name="control").start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            f = conn.makefile("rb")
            line = f.readline(1 << 20)
            req = json.loads(line)
            if req.get("op") == "follow":
                with self._lock:
                    conn.sendall(json.dumps({"ok": True, "offsets": dict(self.offsets)}).encode() + b"\n")
                    conn.settimeout(2)
                    self._followers.append(conn)
                return
            try:
                resp = self.handler(req)
            except Exception as e:  # the answer must reach the caller, whatever happened
                resp = {"ok": False, "error": str(e)}
            conn.sendall(json.dumps(resp).encode() + b"\n")
        except (OSError, ValueError):
            pass
        conn.close()

    def output(self, stream: str, data: bytes) -> None:
        with self._lock:
            self.offsets[stream] = self.offsets.get(stream, 0) + len(data)
            if not self._followers:
                return
            frame = _STREAMS[stream] + struct.pack(">I", len(data)) + data
            for c in list(self._followers):
                try:
                    c.sendall(frame)
                except OSError:  # slow or gone follower: drop it, never stall the run
                    self._followers.remove(c)
                    c.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self.sock.close()
        with self._lock:
            for c in self._followers:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()
            self._followers.clear()


def _connect(path: str, instance_id: str, timeout: float) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        s.close()
        raise NotFoundError(f"run {instance_id} is not running (no control socket)") from None
    return s


def request(path: str, instance_id: str, req: dict[str, Any], timeout: float) -> dict[str, Any]:
    s = _connect(path, instance_id, timeout)
    try:
        s.sendall(json.dumps(req).encode() + b"\n")
        line = s.makefile("rb").readline(1 << 20)
    except OSError:
        raise NotFoundError(f"run {instance_id} did not answer (it may have just ended)") from None
    finally:
        s.close()
    if not line:
        raise NotFoundError(f"run {instance_id} did not answer (it may have just ended)")
    return json.loads(line)


def follow(path: str, instance_id: str) -> Iterator[tuple[str, bytes | dict]]:
    s = _connect(path, instance_id, 5)
    try:
        s.sendall(b'{"op": "follow"}\n')
        f = s.makefile("rb")
        head = f.readline(1 << 20)
        if not head:
            return
        yield "offsets", json.loads(head)["offsets"]
        s.settimeout(None)
        while True:
            hdr = f.read(5)
            if len(hdr) < 5:
                return
            n = struct.unpack(">I", hdr[1:])[0]
            data = f.read(n)
            yield _NAMES.get(hdr[:1], "stdout"), data
    except OSError:
        return
    finally:
        s.close()
