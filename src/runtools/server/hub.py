"""One subscription to the environment's events, fanned out to every SSE client.

A single thread reads the environment (pushed events, plus lease watches so a killed run's
LOST end is an event too) and appends each event to a ring with an id `EPOCH-SEQ`. Clients
wait on an asyncio condition, so 100 clients cost 100 small coroutines, not 100 threads or
subscriptions. A client that reconnects with `Last-Event-ID` gets what it missed from the
ring; one whose id is older than the ring (or from an earlier server) gets a `reset`.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import deque
from itertools import islice
from typing import Any

from runtools.env.base import Environment

RING = 5_000


class Key:
    """What a pattern looks at (RunMatcher): kept per event instead of the whole record."""

    __slots__ = ("job_id", "run_id", "tags")

    def __init__(self, run: Any) -> None:
        self.job_id = run.job_id
        self.run_id = run.run_id
        self.tags = tuple(run.tags)

    @property
    def instance_id(self) -> str:
        return f"{self.job_id}@{self.run_id}"


class Hub:
    def __init__(self, env: Environment) -> None:
        self.env = env
        self.epoch = secrets.token_hex(4)
        self.seq = 0
        # (seq, the event's JSON text, its Key): serialised once for every client, bounded memory
        self.ring: deque[tuple[int, str, Key]] = deque(maxlen=RING)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None  # set (and replaced) on every new event
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: Any = None
        self._ready = threading.Event()
        self.listeners: list[Any] = []  # callables(event) run in the hub thread (metrics)

    # -- the reading thread --------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._changed = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="taro-serve-events", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        self._stop.set()
        w = self._watch
        if w is not None:
            w._sub.wake()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        from runtools.cli.watch import Watch
        from runtools.model.criteria import RunMatcher

        with Watch(self.env, RunMatcher()) as w:
            self._watch = w
            try:
                w.active()
            except Exception:
                pass
            self._ready.set()
            while not self._stop.is_set():
                try:
                    ev = w.next(time.monotonic() + 0.2)  # short: stop() is seen within 0.2 s
                except Exception:
                    ev = None
                    self._stop.wait(0.5)
                if ev is not None:
                    self._publish(ev)

    def _publish(self, ev: Any) -> None:
        from runtools.model.jsonenc import dumps

        data = dumps(ev.to_json())
        for f in self.listeners:
            try:
                f(ev)
            except Exception:
                pass
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._append, data, Key(ev.run))
        except RuntimeError:  # the loop closed meanwhile
            pass

    def _append(self, data: str, key: Key) -> None:  # in the event loop
        self.seq += 1
        self.ring.append((self.seq, data, key))
        changed, self._changed = self._changed, asyncio.Event()
        if changed is not None:
            changed.set()  # wakes every waiting client at once

    # -- clients -------------------------------------------------------------------------------

    def event_id(self, seq: int) -> str:
        return f"{self.epoch}-{seq}"

    def resume_point(self, last_id: str | None) -> tuple[int, bool]:
        """(sequence to send after, reset?) for a client that last saw `last_id`."""
        if not last_id:
            return self.seq, False
        epoch, _, n = last_id.partition("-")
        try:
            seq = int(n)
        except ValueError:
            return self.seq, True
        if epoch != self.epoch or seq > self.seq:
            return self.seq, True
        oldest = self.ring[0][0] if self.ring else self.seq + 1
        if seq < oldest - 1:
            return self.seq, True  # what it missed fell out of the ring
        return seq, False

    def after(self, seq: int) -> list[tuple[int, str, Key]]:
        if not self.ring or self.ring[-1][0] <= seq:
            return []
        start = max(0, seq - self.ring[0][0] + 1)
        return list(islice(self.ring, start, None))

    async def wait_after(self, seq: int, timeout: float) -> None:
        changed = self._changed
        if self.seq > seq or changed is None:
            return
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            pass
