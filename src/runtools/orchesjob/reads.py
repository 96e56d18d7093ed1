"""Reads for orchesjob's status, logs and strict starts.

`Reader` reads the local environment's rows like a transaction's `get`, `find`, `active_runs`
and `get_setting`, but decodes them with `runtools.model.jsonenc.loads` and matches without
`runtools.model.criteria`, so neither `json` nor `re` is imported (each costs a few
milliseconds of a command whose own work is about one). Given the transaction it reads in
(`Reader(env, tx)`) it sees that transaction's snapshot and reaps through it; without one,
each read sees a committed snapshot and a run found with a dead lease is ended LOST through
the environment as usual.

`reader(env)` picks it for a local environment; any other (a home on PostgreSQL) is read
through its own API (`EnvReader`), without the environment's decision lock either.
"""

from __future__ import annotations

from runtools.env.base import RunQuery
from runtools.env.local import store
from runtools.env.local.store import sqlite3
from runtools.model.jsonenc import loads
from runtools.model.run import RunRecord

TYPE_CHECKING = False  # keep `typing` off the hot path
if TYPE_CHECKING:
    from typing import Any


class _All:
    """RunQuery's default matcher (match everything) without importing runtools.model.criteria."""

    include = ()
    exclude = ()

    def __call__(self, r: RunRecord) -> bool:
        return True


_ALL = _All()


def reader(env: Any) -> Reader | EnvReader:
    """The reader of `env`: straight from SQLite for a local environment, else its API."""
    return Reader(env) if hasattr(env, "db_path") else EnvReader(env)


class EnvReader:
    """`get`, `find`, `active_runs`, `active_of_key`, `get_setting` through the Environment API
    (a PostgreSQL environment: reads without the decision lock; a run found with a dead lease is
    ended LOST by `active_runs` in a transaction of its own)."""

    def __init__(self, env: Any) -> None:
        self.env = env

    def get(self, instance_id: str) -> RunRecord | None:
        return self.env.get_run(instance_id)

    def find(self, q: RunQuery) -> list[RunRecord]:
        return self.env.find_runs(q)

    def active_runs(self) -> list[RunRecord]:
        return self.env.active_runs()

    def active_of_key(self, run_key: str) -> list[RunRecord]:
        """The active runs of `run_key` as stored (leases not checked), oldest first."""
        return self.env.find_runs(RunQuery(run_key=run_key, active=True, ascending=True))

    def get_setting(self, kind: str, key: str) -> dict[str, Any] | None:
        return self.env.read_settings(kind).get(key)


class Reader:
    """`get`, `find`, `active_runs`, `get_setting` of a Tx, decoded without `json`."""

    def __init__(self, env: Any, tx: Any = None) -> None:
        self.env = env
        self.tx = tx

    def _rows(self, sql: str, params: Any = ()) -> list[tuple]:
        try:
            return self.env.conn.execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise store.storage_error(e, self.env.db_path) from None

    def get(self, instance_id: str) -> RunRecord | None:
        rows = self._rows(store.BY_ID, (instance_id,))
        return store.record_from_row(rows[0]) if rows else None

    def find(self, q: RunQuery) -> list[RunRecord]:
        if q._matcher is None:
            plain = RunQuery.__new__(RunQuery)
            for name in RunQuery.__slots__:
                setattr(plain, name, getattr(q, name))
            plain._matcher = _ALL  # type: ignore[assignment]  # matches all, without criteria
            q = plain
        sql, params = store.query_sql(q)
        match = q.matcher
        return [r for r in map(store.record_from_row, self._rows(sql, params)) if match is _ALL or match(r)]

    def active_runs(self) -> list[RunRecord]:
        runs = [store.record_from_row(row) for row in self._rows(store.ACTIVE)]
        if all(self.env.lease_alive(r) for r in runs):
            return runs
        # a lease died: that run is ended LOST (in our transaction, or in one of its own)
        return self.tx.active_runs() if self.tx is not None else self.env.active_runs()

    def active_of_key(self, run_key: str) -> list[RunRecord]:
        """The active runs of `run_key` as stored (leases not checked), from the partial index
        of active runs: as cheap with 10k runs of the key in history as with none."""
        sql = f"SELECT {store.ROW} FROM runs WHERE stage != 'ENDED' AND +run_key = ? ORDER BY seq"
        return [store.record_from_row(row) for row in self._rows(sql, (run_key,))]

    def get_setting(self, kind: str, key: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT value FROM settings WHERE kind=? AND key=?", (kind, key))
        return loads(rows[0][0]) if rows else None
