"""Environments: where runs coordinate and are recorded (DESIGN §3).

`open_environment(name)` picks the backend: `memory`, a `postgres://`/`postgresql://` URL
(env/postgres/), a path (contains `/`) to a local environment directory, or the name of a local
environment under $RUNTOOLS_HOME (default `local`, or $RUNTOOLS_ENV). A name or directory
holding a `postgres.url` file (`taro env add`) stands for that PostgreSQL environment.
"""

from __future__ import annotations

import os

from runtools.env.base import Environment, RunQuery

__all__ = ["DEFAULT_ENV", "Environment", "RunQuery", "default_env_name", "open_environment"]


#: the environment used when none is named; reading it before its first run shows an empty history
DEFAULT_ENV = "local"
MISSING_HINT = "run a job in it first, or check -e / RUNTOOLS_ENV"


def default_env_name() -> str:
    """$RUNTOOLS_ENV, else `[defaults] env` of the config file, else `local`."""
    name = os.environ.get("RUNTOOLS_ENV")
    if name:
        return name
    from runtools.config import load

    return load().get("defaults", "env") or DEFAULT_ENV


def open_environment(name: str | None = None, create: bool = True) -> Environment:
    """Open an environment. Nothing is created until the first write (a run, a setting).

    `create=False` is for commands that only read or act on existing runs: nothing is ever
    created, and an environment that does not exist raises NotFoundError (exit 3) — except the
    default `local`, which before its first run reads as empty (nothing ran yet).
    """
    name = name or default_env_name()
    if "/" not in name and ":" not in name:  # [environments.NAME] of the config file
        from runtools.config import load

        named = load().environments().get(name)
        if named:
            name = named.get("url") or os.path.expanduser(named["path"])
    if name == "memory":
        from runtools.env.memory import MemoryEnvironment

        return MemoryEnvironment()
    if name.startswith(("postgres://", "postgresql://")):
        return _postgres(name, None, create)
    from runtools.env.local import LocalEnvironment
    from runtools.env.local.paths import env_dir

    directory = env_dir(name)
    link = os.path.join(directory, POSTGRES_LINK)
    if os.path.isfile(link):  # a named environment that points at a PostgreSQL server (taro env add)
        return _postgres(_read_link(link), name, create)
    env = LocalEnvironment(directory, name=name, create=create)
    if not create and name != DEFAULT_ENV and not env.exists():
        from runtools.errors import NotFoundError

        where = "" if "/" in name else f" ({env.dir})"
        raise NotFoundError(f"environment {name}{where} does not exist: {MISSING_HINT}")
    return env


#: in an environment's directory: the URL of the PostgreSQL environment the name stands for
POSTGRES_LINK = "postgres.url"


def _read_link(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as e:
        from runtools.errors import BackendError

        raise BackendError(f"cannot read {path}: {e.strerror}; check its owner and mode") from None


def _postgres(url: str, name: str | None, create: bool) -> Environment:
    from runtools.env.postgres import PostgresEnvironment

    pg = PostgresEnvironment(url, name=name, create=create)
    if not create and not pg.exists():
        from runtools.errors import NotFoundError

        shown = pg.display if name is None else f"{name} ({pg.display})"
        raise NotFoundError(f"environment {shown} does not exist: {MISSING_HINT}")
    return pg
