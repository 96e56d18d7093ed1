"""Leases on local runs: an exclusive `flock` on a per-run file, held by the live process.

The kernel drops the lock when the last descriptor closes, so a `kill -9` releases it by
itself. The child inherits the descriptor, so a run whose wrapper died keeps its lease until
its command ends too: a mutually exclusive job can never run twice (docs/coordination.md).
"""

from __future__ import annotations

import fcntl
import os

from runtools.env.base import Lease


def lease_path(env_dir: str, instance_id: str) -> str:
    """Where the lease of a run lives (instance ids are validated: safe as file names)."""
    return os.path.join(env_dir, "leases", instance_id)


class FileLease(Lease):
    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self._released = False

    def inheritable_fds(self) -> tuple[int, ...]:
        return () if self._released else (self.fd,)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)


def lease_alive(path: str) -> bool:
    """True while some process holds the lease file locked."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def wait_released(path: str, timeout: float | None) -> bool:
    """Block until nobody holds the lease (True) or `timeout` passes (False). No polling:
    a helper thread sits in a blocking `flock` and the caller waits on its completion."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    import threading

    done = threading.Event()

    def block() -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        finally:
            done.set()
            os.close(fd)

    t = threading.Thread(target=block, daemon=True, name="lease-wait")
    t.start()
    # If we time out the thread stays blocked (daemon) and exits with the process or the lease.
    return done.wait(timeout)
