"""Event push between processes of one environment: Unix datagram sockets, one per listener.

A listener binds a socket in `<runtime>/l/`; a publisher sends each event to every socket
there. No broker: a listener that died leaves a socket nobody reads, and the next publisher
that finds it refused removes it. (`_socket`, not `socket`: the wrapper sends events on its
hot path and `socket` costs milliseconds of imports.)
"""

from __future__ import annotations

import os
from _socket import AF_UNIX, SO_RCVBUF, SOCK_DGRAM, SOL_SOCKET, socket

from runtools.env.base import Subscription
from runtools.model.events import Event
from runtools.model.jsonenc import dumps, loads

_MAX = 200_000


class EventBus:
    def __init__(self, runtime: str) -> None:
        self.dir = os.path.join(runtime, "l")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self._sock: socket | None = None

    def publish(self, event: Event) -> None:
        try:
            entries = os.listdir(self.dir)
        except FileNotFoundError:
            return
        if not entries:
            return
        data = dumps(event.to_wire()).encode()
        if len(data) > _MAX:  # keep the event, shed the bulky parts of the record
            wire = event.to_wire()
            wire["run"].update(command=None, extra={}, actions=wire["run"]["actions"][-5:], warnings=[])
            data = dumps(wire).encode()
        if self._sock is None:
            self._sock = socket(AF_UNIX, SOCK_DGRAM)
            self._sock.settimeout(0.5)  # a listener that stopped reading must not stall a run for long
        for name in entries:
            path = os.path.join(self.dir, name)
            try:
                self._sock.sendto(data, path)
            except (ConnectionRefusedError, FileNotFoundError):
                try:
                    os.unlink(path)
                except OSError:
                    pass
            except OSError:
                pass  # full or slow listener: it loses this event rather than stall the run

    def subscribe(self) -> Subscription:
        return DgramSubscription(self.dir)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class DgramSubscription(Subscription):
    def __init__(self, directory: str) -> None:
        self.sock = socket(AF_UNIX, SOCK_DGRAM)
        self.sock.setsockopt(SOL_SOCKET, SO_RCVBUF, 4 * 1024 * 1024)
        self.path = os.path.join(directory, f"{os.getpid()}-{os.urandom(4).hex()}")
        old = os.umask(0o177)
        try:
            self.sock.bind(self.path)
        finally:
            os.umask(old)
        self._closed = False
        # The kernel queues only a few datagrams per socket (net.unix.max_dgram_qlen, often 10):
        # a reader thread drains them at once, so a burst neither stalls publishers nor is dropped.
        import threading
        from queue import Empty, SimpleQueue

        self._empty = Empty
        self._queue: SimpleQueue[bytes] = SimpleQueue()
        self._reader = threading.Thread(target=self._read, daemon=True, name="event-reader")
        self._reader.start()

    def _read(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(_MAX + 1024)
            except OSError:
                break
            self._queue.put(data)
        self._queue.put(b"")  # wake a get() blocked at close

    def get(self, timeout: float | None = None) -> Event | None:
        """Next event; None on timeout, on a wake-up, or once closed."""
        if self._closed:
            return None
        try:
            data = self._queue.get(timeout=timeout)
        except self._empty:
            return None
        if not data:
            return None  # a wake-up
        try:
            return Event.from_wire(loads(data))
        except (ValueError, KeyError, TypeError):
            return None

    def wake(self) -> None:
        s = socket(AF_UNIX, SOCK_DGRAM)
        s.settimeout(1.0)
        try:
            s.sendto(b"", self.path)
        except OSError:
            pass
        finally:
            s.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.wake()  # the reader returns from recv, sees _closed and ends
        self._reader.join(1.0)
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self.sock.close()
