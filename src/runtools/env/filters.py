"""The WHERE conditions of a history query (`RunQuery`), written once for every SQL backend.

Backends differ only in dialect: the placeholder, how a status list is tested, and how a
pattern is matched (SQLite GLOB, PostgreSQL regular expressions). Ordering and paging stay
with each backend, where the dialects really differ.
"""

from __future__ import annotations

from runtools.model.status import Status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from runtools.env.base import RunQuery

    SqlPart = tuple[str, list[Any]]


def run_filters(
    q: RunQuery, ph: str, match_sql: Callable[[str], SqlPart], status_in: Callable[[list[str]], SqlPart]
) -> tuple[list[str], list[Any]]:
    """Conditions (to be joined with AND) and their parameters, in the dialect given by `ph` (the
    placeholder), `match_sql(pattern)` and `status_in(sorted status values, maybe empty)`."""
    where: list[str] = []
    params: list[Any] = []
    if q.active is True:
        where.append("stage <> 'ENDED'")
    elif q.active is False:
        where.append("stage = 'ENDED'")
    if q.since is not None:
        where.append(f"created_at >= {ph}")
        params.append(q.since)
    if q.until is not None:
        where.append(f"created_at < {ph}")
        params.append(q.until)
    statuses = {s.value for s in q.statuses}
    if q.outcomes:
        by_outcome = {s.value for s in Status if s.outcome in q.outcomes}
        statuses = statuses & by_outcome if statuses else by_outcome
    if q.statuses or q.outcomes:
        sql, ps = status_in(sorted(statuses))
        where.append(sql)
        params.extend(ps)
    if q.job_id is not None:
        where.append(f"job_id = {ph}")
        params.append(q.job_id)
    if q.run_key is not None:
        where.append(f"run_key = {ph}")
        params.append(q.run_key)
    if q.matcher.include:
        parts = []
        for p in q.matcher.include:
            sql, ps = match_sql(p)
            parts.append(sql)
            params.extend(ps)
        where.append("(" + " OR ".join(parts) + ")")
    for p in q.matcher.exclude:
        sql, ps = match_sql(p)
        where.append(f"NOT {sql}")
        params.extend(ps)
    return where, params
