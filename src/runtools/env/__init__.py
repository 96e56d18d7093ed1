"""Environments: where runs coordinate and are recorded (DESIGN §3).

`open_environment(name)` picks the backend: `memory`, a path (contains `/`) to a local
environment directory, or the name of a local environment under $RUNTOOLS_HOME (default
`local`, or $RUNTOOLS_ENV). The contract (env/base.py) is shaped for a PostgreSQL backend too.
"""

from __future__ import annotations

import os

from runtools.env.base import Environment, RunQuery

__all__ = ["Environment", "RunQuery", "default_env_name", "open_environment"]


def default_env_name() -> str:
    return os.environ.get("RUNTOOLS_ENV") or "local"


def open_environment(name: str | None = None) -> Environment:
    name = name or default_env_name()
    if name == "memory":
        from runtools.env.memory import MemoryEnvironment

        return MemoryEnvironment()
    if name.startswith(("postgres://", "postgresql://")):
        from runtools.errors import UsageError

        raise UsageError("PostgreSQL environments are not available in this version: use a local environment")
    from runtools.env.local import LocalEnvironment
    from runtools.env.local.paths import env_dir

    return LocalEnvironment(env_dir(name), name=name)
