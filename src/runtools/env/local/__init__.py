"""The `local` environment: all jobs of one machine, in one directory (DESIGN §3).

    <dir>/runs.db               SQLite (WAL): runs and settings      (store.py)
    <dir>/output/<job>/<run>.*  stdout/stderr of each run
    <dir>/leases/<job@run>      flock held by the live run            (lease.py)
    <runtime>/l/*, <runtime>/c/*  event listener and control sockets  (events.py, control.py)

`LocalEnvironment` (environment.py) is loaded on first use, so a reader that needs only the
store or the leases (orchesjob's fast paths) does not import sockets, events and control.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runtools.env.local.environment import DB_NAMES, LocalEnvironment, LocalTx

__all__ = ["DB_NAMES", "LocalEnvironment", "LocalTx"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from runtools.env.local import environment

        return getattr(environment, name)
    raise AttributeError(f"module 'runtools.env.local' has no attribute {name!r}")
