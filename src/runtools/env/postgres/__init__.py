"""The `postgres` environment: jobs across machines, one PostgreSQL database schema (DESIGN §3, §8).

    store.py          URL (redact, schema=), connections, versioned schema, run SQL
    migrations/*.sql  the schema, one numbered file per version, applied in order
    environment.py    PostgresEnvironment: transactions, leases, LISTEN/NOTIFY events and control

Only this package imports psycopg, and only when a postgres environment is opened.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runtools.env.postgres.environment import PostgresEnvironment

__all__ = ["PostgresEnvironment"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from runtools.env.postgres import environment

        return getattr(environment, name)
    raise AttributeError(f"module 'runtools.env.postgres' has no attribute {name!r}")
