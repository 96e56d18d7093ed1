"""A start that finds its key held, answered from one indexed read of the database file.

A retried `start`, and every start but one in a burst on a key, only has to find the live run
of its key. `live_holder` reads it straight from the local environment's SQLite file and
checks its lease, importing neither the environment (sockets, events, control: ~1.5 ms of
each such start) nor `functools` (which `_sqlite3` would import). Only a positive answer is
used: no database yet, an error, no active run or only one whose lease is gone all answer
None, and the start goes the ordinary way, where the worker's claim decides.

It relies on two things of runtools.env.local's layout (tests/cli/test_orchesjob_peek.py
checks both against the environment): table `runs` (`data` is the RunRecord as JSON; `stage`,
`run_key`, `seq`) and the lease file `<dir>/leases/<instance_id>`, locked while the run lives.
"""

from __future__ import annotations

import os
import sys

from runtools.model.jsonenc import loads
from runtools.model.run import RunRecord
from runtools.orchesjob import DB_NAME

# the active runs of a key, from the partial index of active runs (`+` keeps SQLite off the
# run_key index, which would walk the key's whole history)
ACTIVE_OF_KEY = "SELECT data FROM runs WHERE stage != 'ENDED' AND +run_key = ? ORDER BY seq"
READ_TIMEOUT_S = 0.2  # a reader waits only during WAL recovery; past this, the ordinary way waits


def _sqlite():
    """`_sqlite3` without `functools` (as runtools.env.local.store imports it)."""
    if "_sqlite3" in sys.modules or "functools" in sys.modules:
        import _sqlite3

        return _sqlite3
    from _functools import _lru_cache_wrapper

    def lru_cache(maxsize: int = 128, typed: bool = False):
        return lambda fn: _lru_cache_wrapper(fn, maxsize, typed, tuple)

    stand_in = type(sys)("functools")
    stand_in.lru_cache = lru_cache
    sys.modules["functools"] = stand_in
    try:
        import _sqlite3
    finally:
        if sys.modules.get("functools") is stand_in:
            del sys.modules["functools"]
    return _sqlite3


def lease_path(home: str, run: RunRecord) -> str:
    return os.path.join(home, "leases", run.instance_id)


def lease_held(path: str) -> bool:
    """True while some process holds the lease file locked."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def live_holder(home: str, run_key: str) -> RunRecord | None:
    """The active run of `run_key` whose lease is held, or None (none, or not sure)."""
    path = os.path.join(home, DB_NAME)
    if not os.path.exists(path):
        return None
    try:
        sqlite = _sqlite()
        conn = sqlite.connect(path, timeout=READ_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            rows = conn.execute(ACTIVE_OF_KEY, (run_key,)).fetchall()
        finally:
            conn.close()
        for (data,) in rows:
            run = RunRecord.from_dict(loads(data))
            if lease_held(lease_path(home, run)):
                return run
    except Exception:  # only a positive answer counts: the ordinary way decides the rest
        return None
    return None
