"""orchesjob on the runtools core: start-once runs for orchestrators (seed 004).

`runtools.cli.orchesjob` parses and prints; this package decides: `open_env` opens the
environment of the home, `worker` starts runs (a detached worker process per run), `ops` does
the rest.

A home is a local directory ($ORCHESJOB_HOME: logs, gates). Its runs live in the SQLite file
`orchesjob.db` there, or — when the home holds a `postgres.url` file (`taro env add HOME URL`,
owner-only) — in that PostgreSQL environment, shared by every host whose home points at it.
"""

from __future__ import annotations

import os

HOME_ENV = "ORCHESJOB_HOME"
DEFAULT_HOME = "/var/lib/orchesjob"
DB_NAME = "orchesjob.db"
LOCK_TIMEOUT_ENV = "ORCHESJOB_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 10.0
#: in a home: the URL of the PostgreSQL environment its runs live in (as runtools.env.POSTGRES_LINK)
POSTGRES_LINK = "postgres.url"


def home_dir() -> str:
    return os.path.abspath(os.environ.get(HOME_ENV) or DEFAULT_HOME)


def logs_dir(home: str) -> str:
    return os.path.join(home, "logs")


def lock_timeout() -> float:
    """$ORCHESJOB_LOCK_TIMEOUT in seconds (default 10); UsageError if it is not a number."""
    from runtools.model.durations import env_seconds

    return env_seconds(LOCK_TIMEOUT_ENV, DEFAULT_LOCK_TIMEOUT)


def postgres_url(home: str) -> str | None:
    """The URL in `home`/postgres.url (its runs live in that PostgreSQL environment), or None
    (they live in `home`/orchesjob.db). One stat for a local home."""
    link = os.path.join(home, POSTGRES_LINK)
    if not os.path.isfile(link):
        return None
    from runtools.env import _read_link

    return _read_link(link)


def this_host() -> str:
    """The host name runs record (as JobRun does: $RUNTOOLS_HOST overrides it)."""
    return os.environ.get("RUNTOOLS_HOST") or os.uname().nodename


def open_env(home: str | None = None, create: bool = True):  # -> Environment
    """The environment of $ORCHESJOB_HOME (created 0700, with logs/ 0700; database orchesjob.db,
    or the PostgreSQL environment named by its postgres.url).

    With `create=False` (every command but start and the worker) nothing is created: a home that
    does not exist, or has no database yet, reads as empty, so the seed's own answers stand
    ("run_key not found", exit 3; `status --running` prints []).
    A write waits at most $ORCHESJOB_LOCK_TIMEOUT seconds (default 10) for a busy database,
    then fails with exit 5 instead of hanging.
    """
    home = home or home_dir()
    timeout = lock_timeout()
    url = postgres_url(home)
    if url is not None:
        return _open_postgres(home, url, create)
    from runtools.env.local import LocalEnvironment, store
    from runtools.env.local.paths import ensure_private_dir

    if hasattr(store, "BUSY_TIMEOUT_S"):
        store.BUSY_TIMEOUT_S = max(0.0, timeout)
    env = LocalEnvironment(home, name=home, db_name=DB_NAME, create=create)
    if not create:
        return env
    ensure_private_dir(home)
    ensure_private_dir(logs_dir(home))
    return env


def _open_postgres(home: str, url: str, create: bool):  # -> Environment
    """The PostgreSQL environment of a home. Without `create`, one whose schema does not exist
    yet reads as empty (as a local home without its database): an empty in-memory environment
    stands for it, so every command gives its own answer ("run_key not found", [])."""
    from runtools.env.postgres import PostgresEnvironment

    env = PostgresEnvironment(url, create=create)
    if not create:
        try:
            exists = env.exists()
        except BaseException:
            env.close()
            raise
        if not exists:
            env.close()
            from runtools.env.memory import MemoryEnvironment

            return MemoryEnvironment()
        return env
    from runtools.env.local.paths import ensure_private_dir

    ensure_private_dir(home)
    ensure_private_dir(logs_dir(home))
    return env
