"""orchesjob on the runtools core: start-once runs for orchestrators (seed 004).

`runtools.cli.orchesjob` parses and prints; this package decides: `home` opens the
environment, `worker` starts runs (a detached worker process per run), `ops` does the rest.
"""

from __future__ import annotations

import os

HOME_ENV = "ORCHESJOB_HOME"
DEFAULT_HOME = "/var/lib/orchesjob"
DB_NAME = "orchesjob.db"
LOCK_TIMEOUT_ENV = "ORCHESJOB_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 10.0


def home_dir() -> str:
    return os.path.abspath(os.environ.get(HOME_ENV) or DEFAULT_HOME)


def logs_dir(home: str) -> str:
    return os.path.join(home, "logs")


def lock_timeout() -> float:
    """$ORCHESJOB_LOCK_TIMEOUT in seconds (default 10); UsageError if it is not a number."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV)
    try:
        value = float(raw) if raw else DEFAULT_LOCK_TIMEOUT
    except ValueError:
        value = -1.0
    if not 0 <= value < 1e9:  # NaN, negative, inf: as $RUNTOOLS_BUSY_TIMEOUT
        from runtools.errors import UsageError

        raise UsageError(f"invalid ${LOCK_TIMEOUT_ENV} {raw!r}: use seconds, e.g. 10")
    return value


def open_env(home: str | None = None, create: bool = True):  # -> LocalEnvironment
    """The environment in $ORCHESJOB_HOME (created 0700, with logs/ 0700; database orchesjob.db).

    With `create=False` (every command but start and the worker) nothing is created: a home that
    does not exist, or has no database yet, reads as empty, so the seed's own answers stand
    ("run_key not found", exit 3; `status --running` prints []).
    A write waits at most $ORCHESJOB_LOCK_TIMEOUT seconds (default 10) for a busy database,
    then fails with exit 5 instead of hanging.
    """
    from runtools.env.local import LocalEnvironment, store
    from runtools.env.local.paths import ensure_private_dir

    home = home or home_dir()
    timeout = lock_timeout()
    if hasattr(store, "BUSY_TIMEOUT_S"):
        store.BUSY_TIMEOUT_S = max(0.0, timeout)
    env = LocalEnvironment(home, name=home, db_name=DB_NAME, create=create)
    if not create:
        return env
    ensure_private_dir(home)
    ensure_private_dir(logs_dir(home))
    return env
