"""Event push between processes of one environment: Unix datagram sockets, one per listener.

A listener binds a socket in `<runtime>/l/`; a publisher sends each event to every socket
there. No broker: a listener that died leaves a socket nobody reads, and the next publisher
that finds it refused removes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket

from runtools.env.base import Subscription
from runtools.model.events import Event

_MAX = 200_000


class EventBus:
    def __init__(self, runtime: str) -> None:
        self.dir = os.path.join(runtime, "l")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self._sock: socket.socket | None = None

    def publish(self, event: Event) -> None:
        try:
            entries = os.listdir(self.dir)
        except FileNotFoundError:
            return
        if not entries:
            return
        data = json.dumps(event.to_wire(), separators=(",", ":")).encode()
        if len(data) > _MAX:  # keep the event, shed the bulky parts of the record
            wire = event.to_wire()
            wire["run"].update(command=None, extra={}, actions=wire["run"]["actions"][-5:])
            data = json.dumps(wire, separators=(",", ":")).encode()[:_MAX]
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.settimeout(0.5)  # a listener that stopped reading must not block a run
        for name in entries:
            path = os.path.join(self.dir, name)
            try:
                self._sock.sendto(data, path)
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    os.unlink(path)
            except OSError:
                pass  # full or slow listener: drop this event for it rather than stall the run

    def subscribe(self) -> Subscription:
        return DgramSubscription(self.dir)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class DgramSubscription(Subscription):
    def __init__(self, directory: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.path = os.path.join(directory, f"{os.getpid()}-{os.urandom(4).hex()}")
        old = os.umask(0o177)
        try:
            self.sock.bind(self.path)
        finally:
            os.umask(old)
        self._closed = False

    def get(self, timeout: float | None = None) -> Event | None:
        if self._closed:
            return None
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(_MAX + 1024)
        except (TimeoutError, OSError):
            return None
        if not data:
            return None  # a wake-up
        try:
            return Event.from_wire(json.loads(data))
        except (ValueError, KeyError, TypeError):
            return None

    def wake(self) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s, contextlib.suppress(OSError):
            s.sendto(b"", self.path)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self.sock.close()
