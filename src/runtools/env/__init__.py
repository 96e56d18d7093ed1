"""Environments: where runs coordinate and are recorded (DESIGN §3).

`open_environment(name)` picks the backend: `memory`, a path (contains `/`) to a local
environment directory, or the name of a local environment under $RUNTOOLS_HOME (default
`local`, or $RUNTOOLS_ENV). The contract (env/base.py) is shaped for a PostgreSQL backend too.
"""

from __future__ import annotations

import os

from runtools.env.base import Environment, RunQuery

__all__ = ["DEFAULT_ENV", "Environment", "RunQuery", "default_env_name", "open_environment"]


#: the environment used when none is named; reading it before its first run shows an empty history
DEFAULT_ENV = "local"
MISSING_HINT = "run a job in it first, or check -e / RUNTOOLS_ENV"


def default_env_name() -> str:
    return os.environ.get("RUNTOOLS_ENV") or DEFAULT_ENV


def open_environment(name: str | None = None, create: bool = True) -> Environment:
    """Open an environment. Nothing is created until the first write (a run, a setting).

    `create=False` is for commands that only read or act on existing runs: nothing is ever
    created, and an environment that does not exist raises NotFoundError (exit 3) — except the
    default `local`, which before its first run reads as empty (nothing ran yet).
    """
    name = name or default_env_name()
    if name == "memory":
        from runtools.env.memory import MemoryEnvironment

        return MemoryEnvironment()
    if name.startswith(("postgres://", "postgresql://")):
        from runtools.env.postgres import PostgresEnvironment

        pg = PostgresEnvironment(name, create=create)
        if not create and not pg.exists():
            from runtools.errors import NotFoundError

            raise NotFoundError(f"environment {pg.display} does not exist: {MISSING_HINT}")
        return pg
    from runtools.env.local import LocalEnvironment
    from runtools.env.local.paths import env_dir

    env = LocalEnvironment(env_dir(name), name=name, create=create)
    if not create and name != DEFAULT_ENV and not env.exists():
        from runtools.errors import NotFoundError

        where = "" if "/" in name else f" ({env.dir})"
        raise NotFoundError(f"environment {name}{where} does not exist: {MISSING_HINT}")
    return env
