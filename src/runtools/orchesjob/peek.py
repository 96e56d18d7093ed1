"""A start that finds its key held, answered from one indexed read of the database file.

A retried `start`, and every start but one in a burst on a key, only has to find the live run
of its key. `live_holder` reads it straight from the local environment's SQLite file and
checks its lease, importing neither the environment (sockets, events, control: ~1.5 ms of
each such start) nor `functools` (which `_sqlite3` would import). Only a positive answer is
used: no database yet, an error, no active run or only one whose lease is gone all answer
None, and the start goes the ordinary way, where the worker's claim decides.

It uses the local environment's own store (`runs` table) and lease helpers, without loading
`LocalEnvironment` itself (runtools.env.local loads that lazily).
"""

from __future__ import annotations

import os

from runtools.env.local import store
from runtools.env.local.lease import lease_alive, lease_path
from runtools.env.local.store import sqlite3
from runtools.model.run import RunRecord
from runtools.orchesjob import DB_NAME

# the active runs of a key, from the partial index of active runs (`+` keeps SQLite off the
# run_key index, which would walk the key's whole history)
ACTIVE_OF_KEY = f"SELECT {store.ROW} FROM runs WHERE stage != 'ENDED' AND +run_key = ? ORDER BY seq"
READ_TIMEOUT_S = 0.2  # a reader waits only during WAL recovery; past this, the ordinary way waits


def live_holder(home: str, run_key: str) -> RunRecord | None:
    """The active run of `run_key` whose lease is held, or None (none, or not sure)."""
    path = os.path.join(home, DB_NAME)
    if not os.path.exists(path):
        return None
    try:
        conn = sqlite3.connect(path, timeout=READ_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            rows = conn.execute(ACTIVE_OF_KEY, (run_key,)).fetchall()
        finally:
            conn.close()
        for row in rows:
            run = store.record_from_row(row)
            if lease_alive(lease_path(home, run.instance_id)):
                return run
    except Exception:  # only a positive answer counts: the ordinary way decides the rest
        return None
    return None
