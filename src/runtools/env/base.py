"""The Environment contract: what every backend (memory, local, postgres) provides.

Callers (the job runner, taro, orchesjob) only ever talk to this interface, so a backend
is a store + leases + an exclusive decision transaction + events + control (DESIGN §3).

Coordination rules are written once, in Python, against `Tx`: a backend only has to make
`transaction()` exclusive for the environment and keep `Tx.active_runs()` honest (a run
whose lease is gone is ended LOST inside the transaction that notices it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

TYPE_CHECKING = False  # no `typing`/`contextlib`/`dataclasses` on the hot path of `run job`
if TYPE_CHECKING:
    import contextlib
    from collections.abc import Callable, Iterator
    from typing import Any

    from runtools.model.criteria import RunMatcher
    from runtools.model.events import Event
    from runtools.model.run import RunRecord
    from runtools.model.status import Outcome, Status


class RunQuery:
    """A history query. Results come newest first (`ascending` reverses)."""

    __slots__ = ("_matcher", "active", "ascending", "job_id", "last_per_job", "limit", "outcomes", "run_key",
                 "since", "statuses", "until")

    def __init__(
        self,
        matcher: RunMatcher | None = None,
        active: bool | None = None,  # True: only active runs; False: only ended runs
        since: float | None = None,  # created at or after
        until: float | None = None,  # created before
        statuses: tuple[Status, ...] = (),
        outcomes: tuple[Outcome, ...] = (),
        run_key: str | None = None,
        limit: int | None = None,
        last_per_job: bool = False,
        ascending: bool = False,
        job_id: str | None = None,  # exactly this job (the (job_id, created_at) index; patterns cannot use it)
    ) -> None:
        self._matcher = matcher
        self.active = active
        self.since = since
        self.until = until
        self.statuses = tuple(statuses)
        self.outcomes = tuple(outcomes)
        self.run_key = run_key
        self.limit = limit
        self.last_per_job = last_per_job
        self.ascending = ascending
        self.job_id = job_id

    @property
    def matcher(self) -> RunMatcher:
        if self._matcher is None:
            from runtools.model.criteria import RunMatcher

            self._matcher = RunMatcher()
        return self._matcher

    @matcher.setter
    def matcher(self, value: RunMatcher) -> None:
        self._matcher = value


class Tx(ABC):
    """One short exclusive transaction against the environment."""

    def __init__(self) -> None:
        self.events: list[Event] = []  # published by the environment after commit
        self.reaped: list[RunRecord] = []  # runs this transaction ended LOST: handed over after commit

    @abstractmethod
    def active_runs(self) -> list[RunRecord]:
        """Active runs, oldest first; runs whose lease is gone are ended LOST here."""

    @abstractmethod
    def get(self, instance_id: str) -> RunRecord | None: ...

    @abstractmethod
    def find(self, query: RunQuery) -> list[RunRecord]: ...

    @abstractmethod
    def insert(self, run: RunRecord) -> None: ...

    @abstractmethod
    def update(self, run: RunRecord) -> None: ...

    @abstractmethod
    def delete(self, instance_id: str) -> None: ...

    # -- small keyed tables: disabled jobs, strict run-key overrides ---------------------------

    @abstractmethod
    def get_setting(self, kind: str, key: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def put_setting(self, kind: str, key: str, value: dict[str, Any] | None) -> None:
        """Store (or with None, remove) a setting such as a disabled pattern or an unlock."""

    @abstractmethod
    def settings(self, kind: str) -> dict[str, dict[str, Any]]: ...

    def publish_after_commit(self, event: Event) -> None:
        self.events.append(event)

    def now(self) -> float:
        """The environment's clock (epoch seconds), read inside the transaction: time-based
        decisions (service rates) of every process and host use this one clock."""
        import time

        return time.time()


class Lease(ABC):
    """Held by the live process of a run; released explicitly or by the run's death."""

    @abstractmethod
    def release(self) -> None: ...

    def inheritable_fds(self) -> tuple[int, ...]:
        """Descriptors a child process should inherit to keep the lease alive while it runs."""
        return ()


class Subscription(ABC):
    """A stream of events pushed to one listener."""

    @abstractmethod
    def get(self, timeout: float | None = None) -> Event | None:
        """Next event, or None when `timeout` passed (or the subscription was closed)."""

    @abstractmethod
    def wake(self) -> None:
        """Make the current (or next) `get` return None at once; safe from any thread."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if TYPE_CHECKING:
    ControlHandler = Callable[[dict[str, Any]], dict[str, Any]]
else:
    ControlHandler = "Callable[[dict[str, Any]], dict[str, Any]]"  # annotations only


class ControlEndpoint(ABC):
    """The live run's end of control: receives requests (stop, release, ...) and output followers."""

    @abstractmethod
    def output(self, stream: str, data: bytes) -> None:
        """Push an output chunk to followers (called after it was written to storage)."""

    def rebase(self, stream: str, end: int) -> None:  # noqa: B027 - optional hook
        """The stored file of `stream` was cut to keep its tail and now holds `end` bytes:
        followers that join from here read the file up to there."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Store output still held back (batched): called before the run's end is recorded, so a
        reader that sees the end finds all of it."""

    @abstractmethod
    def close(self) -> None: ...


class Environment(ABC):
    """Where runs coordinate and are recorded."""

    name: str

    # -- store ---------------------------------------------------------------------------------

    @abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[Tx]:
        """Exclusive for the whole environment; commit on normal exit, then publish `tx.events`."""

    def get_run(self, instance_id: str) -> RunRecord | None:
        with self.transaction() as tx:
            return tx.get(instance_id)

    @abstractmethod
    def find_runs(self, query: RunQuery) -> list[RunRecord]:
        """Read-only query (does not take the exclusive lock)."""

    def read_settings(self, kind: str) -> dict[str, dict[str, Any]]:
        """The settings of `kind` (disabled patterns, ...), read without the exclusive lock."""
        with self.transaction() as tx:
            return tx.settings(kind)

    def active_runs(self, matcher: RunMatcher | None = None) -> list[RunRecord]:
        """Active runs with their leases checked (dead ones become LOST)."""
        with self.transaction() as tx:
            runs = tx.active_runs()
        return [r for r in runs if matcher is None or matcher(r)]

    def stats(self, query: RunQuery) -> list[dict[str, Any]]:
        """Per job: runs, success rate, last status, p50/p95/max duration of ended runs."""
        from runtools.model.stats import job_stats

        return job_stats(self.find_runs(query))

    # -- leases --------------------------------------------------------------------------------

    @abstractmethod
    def lease(self, run: RunRecord) -> Lease:
        """Take the lease of a new run; must happen before the run is inserted."""

    def wait_lease(self, run: RunRecord, timeout: float | None) -> bool:
        """Block until the run's lease is released (True) or `timeout` passes (False)."""
        raise NotImplementedError

    # -- events --------------------------------------------------------------------------------

    @abstractmethod
    def publish(self, event: Event) -> None: ...

    @abstractmethod
    def subscribe(self) -> Subscription: ...

    # -- control -------------------------------------------------------------------------------

    @abstractmethod
    def serve_control(self, run: RunRecord, handler: ControlHandler) -> ControlEndpoint: ...

    @abstractmethod
    def control(self, instance_id: str, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send a request to a live run; raises NotFoundError when it cannot be reached."""

    def stop_orphan(self, run: RunRecord, interrupt: bool = False, by: str | None = None,
                    grace: float = 10.0) -> RunRecord | None:
        """Stop a run that no control request reaches because its wrapper is gone while its command
        still runs: TERM the command's process group, KILL after `grace`; the run ends STOPPED
        (INTERRUPTED), with `by` recorded. Returns the run as it is afterwards, or None when it is
        no such orphan (its wrapper may be alive). Backends without orphans return None."""
        return None

    @abstractmethod
    def follow_output(self, instance_id: str) -> Iterator[tuple[str, bytes | dict]]:
        """Live output of a run: first ("offsets", {stream: bytes stored}), then (stream, chunk)."""

    # -- output --------------------------------------------------------------------------------

    @abstractmethod
    def output_paths(self, run: RunRecord) -> tuple[str, str]:
        """Where the run's stdout and stderr are stored."""

    def end_wait(self) -> float:
        """How long a run's wrapper keeps trying to record its end when the store cannot be
        reached (seconds; 0: a few quick attempts). A backend on a server that may be away for a
        while (postgres) says longer, so the real end is recorded once it is back."""
        return 0.0

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> Environment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
