"""Waiting on other runs' leases without a connection per wait (issue 9: connection use).

A lease is a session advisory lock; its holder dying sends no NOTIFY, so a wait must look. A
blocking lock request would need a connection of its own for every wait (10 runs queued behind
one holder held 46 connections). Instead, one thread per environment object asks every
LEASE_POLL_S, in one statement on the environment object's main connection, which of the
leases its waits are on are still held; a wait also asks at once when it starts, so a lease
that is already free is seen without delay. A holder that ends normally is seen by waiters
through its `ended` event first (they decide on events); this covers the ones that crash.
"""

from __future__ import annotations

import _thread
import time

from runtools.model.durations import wait_slice

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runtools.env.postgres.environment import PostgresEnvironment

#: how often a process looks at the leases it waits on (one query for all of them): a holder
#: that died is seen within this, plus the decision it wakes, which waits out the fence
#: (RUNTOOLS_PG_FENCE, 0.7 s): 0.1 s keeps the takeover after a crash within the 1 s goal
LEASE_POLL_S = 0.1


class LeaseWaits:
    """The lease waits of one environment object, checked together by one thread."""

    def __init__(self, env: PostgresEnvironment) -> None:
        self.env = env
        self._lock = _thread.allocate_lock()  # guards `waits`
        self.waits: dict[str, list] = {}  # instance id -> [done lock, ...] of its waiters
        self._kick = _thread.allocate_lock()  # released: check now (a new wait, or closing)
        self._kick.acquire()
        self._closed = False
        self._thread: int | None = None
        self.checks = 0  # statements sent (tests and benchmarks read it)

    def wait(self, instance_id: str, timeout: float | None) -> bool:
        """Block until the lease of `instance_id` is free (True) or `timeout` passes (False)."""
        done = _thread.allocate_lock()
        done.acquire()
        with self._lock:
            if self._closed:
                return False
            self.waits.setdefault(instance_id, []).append(done)
            if self._thread is None:
                self._thread = _thread.start_new_thread(self._loop, ())
        self._wake()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return done.acquire(blocking=False) and not self._closed
                if done.acquire(timeout=float(wait_slice(left))):  # type: ignore[arg-type]
                    return not self._closed  # released by close(): the lease was not seen free
        finally:
            with self._lock:
                waiters = self.waits.get(instance_id, [])
                if done in waiters:
                    waiters.remove(done)
                if not waiters:
                    self.waits.pop(instance_id, None)

    def _wake(self) -> None:
        try:
            self._kick.release()
        except RuntimeError:
            pass  # already released: a check is due anyway

    def _loop(self) -> None:
        while not self._closed:
            with self._lock:
                watched = list(self.waits)
            if watched:
                try:
                    free = self._free(watched)
                except Exception:
                    free = set()  # the hub is reconnecting (a server restart): ask again next time
                with self._lock:
                    if self._closed:
                        return
                    for iid in free:
                        for done in self.waits.pop(iid, []):
                            done.release()
                self._kick.acquire(timeout=LEASE_POLL_S)
            else:
                self._kick.acquire(timeout=float(wait_slice(None)))  # type: ignore[arg-type]

    def _free(self, watched: list[str]) -> set[str]:
        """Which of these runs' leases are free (not held, and not being taken again by their
        wrapper just after a server restart)."""
        env = self.env
        keys = {env.lease_key(iid): iid for iid in watched}

        def free(conn: Any) -> set[str]:
            self.checks += 1
            held = env._held(list(keys), conn)
            gone = {iid for key, iid in keys.items() if key not in held}
            return {iid for iid in gone if not env._retaking(conn, iid)}

        # (not the LISTEN connection: its thread must stay free to hand on notifications)
        return env._read(free)

    def close(self) -> None:
        """End the thread; waits still on return False (nothing is known about their leases)."""
        self._closed = True
        with self._lock:
            for waiters in self.waits.values():
                for done in waiters:
                    done.release()
            self.waits.clear()
        self._wake()
