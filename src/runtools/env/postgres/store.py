"""PostgreSQL storage of a postgres environment: the URL, connections, versioned schema, SQL.

The run record is stored exactly as in the local SQLite store (the whole record as JSON text in
`data`, index columns beside it), so `runtools.env.local.store` decodes and encodes rows for
both. Only this backend imports `psycopg`, and only when a postgres environment is opened.
"""

from __future__ import annotations

import os
import re
from _blake2 import blake2b

from runtools.errors import BackendError, UsageError
from runtools.model.durations import env_seconds

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    import psycopg

    from runtools.env.base import RunQuery

#: schema used when the URL names none (`?schema=NAME`)
DEFAULT_SCHEMA = "runtools"
#: what `schema=` may be: a plain lower-case identifier (no quoting games)
_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: libpq keepalive settings used unless the URL sets them: a silent host is found out in ~30 s
KEEPALIVE_DEFAULTS = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
    "connect_timeout": "10",
}
MIGRATIONS_PACKAGE = "runtools.env.postgres.migrations"


def is_url(name: str) -> bool:
    return name.startswith(("postgres://", "postgresql://"))


def redact(url: str) -> str:
    """`url` with any password replaced by `***` (in the user part and in `password=`)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    # the user part ends at the last `@` before the query (a raw `/` in a password stays in it)
    end = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, end)
    if at < 0:
        at = -1
    netloc_end = rest.find("/", at + 1, end)
    netloc_end = end if netloc_end < 0 else netloc_end
    netloc, tail = rest[:netloc_end], rest[netloc_end:]
    if "@" in netloc:
        userinfo, _, hostpart = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{hostpart}"
    tail = re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", tail)
    return f"{scheme}{sep}{netloc}{tail}"


def split_url(url: str) -> tuple[str, str]:
    """(libpq URL without our `schema=` option, schema name)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    schema = DEFAULT_SCHEMA
    kept = []
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k == "schema":
            schema = v
        else:
            kept.append((k, v))
    if not _SCHEMA_RE.fullmatch(schema):
        raise UsageError(f"invalid schema {schema!r} in {redact(url)}: use lower-case letters, digits and _ "
                         "(at most 63, not starting with a digit)")
    return urlunsplit(parts._replace(query=urlencode(kept))), schema


def key64(*parts: str) -> int:
    """A signed 64-bit advisory lock key for `parts` (stable across hosts and versions)."""
    digest = blake2b("\0".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def short_hash(*parts: str) -> str:
    return blake2b("\0".join(parts).encode(), digest_size=8).hexdigest()


def import_psycopg():  # -> module
    try:
        import psycopg
    except ImportError:
        raise BackendError("PostgreSQL environments need psycopg 3: pip install 'runtools[postgres]'") from None
    return psycopg


#: a lease not confirmed for this long is lost: the wrapper stops its command (seconds;
#: $RUNTOOLS_PG_LEASE_GRACE)
DEFAULT_LEASE_GRACE_S = 5.0
#: the server drops the sessions (so the leases) of a host silent for this long (seconds;
#: $RUNTOOLS_PG_SILENT_DROP): must exceed the lease grace plus the command's --kill-after
DEFAULT_SILENT_DROP_S = 24.0


def _seconds(var: str, default: float, most: float = 3600.0) -> float:
    return env_seconds(var, default, 1.0, most)


#: how long a wrapper keeps trying to record its run's end while the server is away, with backoff
#: (seconds; $RUNTOOLS_PG_END_WAIT): the real end, not LOST, once it is back
DEFAULT_END_WAIT_S = 600.0


def reconnect_wait(default: float) -> float:
    """How long an operation waits for a lost server to come back ($RUNTOOLS_PG_RECONNECT_WAIT)."""
    return _seconds("RUNTOOLS_PG_RECONNECT_WAIT", default)


def end_wait() -> float:
    return _seconds("RUNTOOLS_PG_END_WAIT", DEFAULT_END_WAIT_S, 86400.0)


def lease_grace() -> float:
    return _seconds("RUNTOOLS_PG_LEASE_GRACE", DEFAULT_LEASE_GRACE_S)


def silent_drop() -> float:
    return _seconds("RUNTOOLS_PG_SILENT_DROP", DEFAULT_SILENT_DROP_S)


#: a run found holding neither its lease nor its control key is ended LOST only after this long
#: (seconds; $RUNTOOLS_PG_FENCE): the deciding transaction waits it out, then looks again. Its
#: holder, if alive, gives itself half of it to take its keys again, else SIGKILLs its command.
DEFAULT_FENCE_S = 0.7


def fence() -> float:
    """The taker's confirm window W_t; the holder's deadline W_h is fence() / 2 (the other half is
    the margin for noticing the cut and being scheduled). Set the same on every host."""
    return env_seconds("RUNTOOLS_PG_FENCE", DEFAULT_FENCE_S, 0.2, 60.0)


def lease_client() -> dict[str, str]:
    """A lease connection's own client settings: a probe the server does not acknowledge within
    0.8 x the lease grace fails, so the wrapper learns of a cut within its grace."""
    grace = lease_grace()
    return {"tcp_user_timeout": str(int(grace * 800)), "keepalives_idle": "1", "keepalives_interval": "1",
            "keepalives_count": "2", "connect_timeout": str(max(2, int(grace * 0.6)))}


def server_options() -> str:
    """Session settings for the server (libpq `options`): it gives up on a silent host after
    silent_drop() seconds (keepalives idle S/3, then 4 probes S/6 apart; unacknowledged data S)."""
    drop = silent_drop()
    idle, interval = max(1, round(drop / 3)), max(1, round(drop / 6))
    return (f"-c tcp_keepalives_idle={idle} -c tcp_keepalives_interval={interval} -c tcp_keepalives_count=4 "
            f"-c tcp_user_timeout={int(drop * 1000)}")


def connect(libpq_url: str, display: str, schema: str | None = None, lease: bool = False) -> psycopg.Connection:
    """A new autocommit connection (search_path set to `schema` when given); BackendError
    saying which server could not be reached and why (never the password). The server is told
    to give up on the session after silent_drop() seconds of silence (a partitioned host's
    leases and control keys go then); a `lease` connection itself gives up on a silent server
    sooner (lease_client())."""
    psycopg = import_psycopg()
    from psycopg.conninfo import conninfo_to_dict

    try:
        given = conninfo_to_dict(libpq_url)
    except psycopg.Error as e:
        raise UsageError(f"invalid PostgreSQL URL {display}: {_first_line(e)}") from None
    extra = {k: v for k, v in KEEPALIVE_DEFAULTS.items() if k not in given}
    if lease:
        extra.update(lease_client())
    if "application_name" not in given:
        extra["application_name"] = "runtools"
    # server-side settings ride the startup packet (no extra round trip), after the URL's own
    options = [str(given["options"])] if given.get("options") else []
    options.append(server_options())
    if schema is not None:
        options.append(f"-c search_path={schema}")  # a plain identifier (split_url checked it)
    extra["options"] = " ".join(options)
    try:
        return psycopg.connect(libpq_url, autocommit=True, **extra)
    except psycopg.Error as e:
        raise BackendError(f"cannot connect to {display}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0].strip()


def error(e: BaseException, display: str) -> BackendError:
    """The BackendError (exit 5; `run job`: 125) for a psycopg error on the environment."""
    if isinstance(e, BackendError):
        return e
    return BackendError(f"cannot use {display}: {_first_line(e)}")


# -- schema ---------------------------------------------------------------------------------


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every migration shipped, in order."""
    from importlib import resources

    out = []
    for entry in resources.files(MIGRATIONS_PACKAGE).iterdir():
        name = entry.name
        m = re.fullmatch(r"(\d{4})_[a-z0-9_]+\.sql", name)
        if m:
            out.append((int(m.group(1)), name, entry.read_text()))
    out.sort()
    for i, (version, name, _) in enumerate(out, 1):
        if version != i:  # pragma: no cover - a packaging mistake
            raise BackendError(f"migration {name} is out of sequence (expected {i:04d}_*.sql)")
    return out


def current_version(conn: psycopg.Connection, schema: str) -> int | None:
    """The schema's version, or None when it has no runtools tables yet."""
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".schema_version',)).fetchone()
    if not row or not row[0]:
        return None
    row = conn.execute(f'SELECT max(version) FROM "{schema}".schema_version').fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def ensure_schema(conn: psycopg.Connection, schema: str, display: str, create: bool) -> bool:
    """Bring the schema up to date (creating it on first use); False when it does not exist and
    `create` is False. A schema newer than this code is a BackendError."""
    known = SCHEMA_VERSION
    version = current_version(conn, schema)
    if version == known:
        return True
    if version is not None and version > known:
        raise _newer(display, schema, version)
    if version is None and not create:
        return False
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (key64("runtools-migrate", schema),))
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{schema}".schema_version ('
                     "version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                     "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        row = conn.execute(f'SELECT max(version) FROM "{schema}".schema_version').fetchone()
        version = int(row[0]) if row and row[0] is not None else 0
        if version > known:
            raise _newer(display, schema, version)
        conn.execute(f'SET LOCAL search_path TO "{schema}"')
        for v, name, sql in migrations():
            if v <= version:
                continue
            conn.execute(sql)
            conn.execute("INSERT INTO schema_version (version, name) VALUES (%s, %s)", (v, name))
        conn.execute("COMMIT")
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except Exception:
            pass
        raise
    return True


SCHEMA_VERSION = 1


def _newer(display: str, schema: str, version: int) -> BackendError:
    return BackendError(f"schema {schema} of {display} was written by a newer runtools (schema {version} > "
                        f"{SCHEMA_VERSION}): upgrade runtools to use it")


# -- runs -----------------------------------------------------------------------------------

#: the columns every run query selects (as local: the record, then its indexed copies)
ROW = "data, job_id, run_id, stage, status, created_at, ended_at"
INSERT = (
    "INSERT INTO runs (instance_id, job_id, run_id, stage, status, created_at, ended_at, run_key, tags, data) "
    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s::jsonb,%s)"
)
UPDATE = (
    "UPDATE runs SET instance_id=%s, job_id=%s, run_id=%s, stage=%s, status=%s, created_at=%s, ended_at=%s, "
    "run_key=%s, tags=%s::jsonb, data=%s WHERE instance_id=%s"
)
#: many runs updated in one statement (a queue decision renumbers everyone in line): one array
#: per column of UPDATE, in its order (the last one the instance id the row is found by)
UPDATE_MANY = (
    "UPDATE runs SET job_id=v.job_id, run_id=v.run_id, stage=v.stage, status=v.status, created_at=v.created_at, "
    "ended_at=v.ended_at, run_key=v.run_key, tags=v.tags::jsonb, data=v.data "
    "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::float8[], %s::float8[], "
    "%s::text[], %s::text[], %s::text[]) "
    "AS v(instance_id, job_id, run_id, stage, status, created_at, ended_at, run_key, tags, data) "
    "WHERE runs.instance_id = v.instance_id"
)
#: active runs: the record, then whether it was inserted before the server (re)started, its id
ACTIVE = (f"SELECT {ROW}, inserted_at < pg_postmaster_start_time(), instance_id FROM runs "
          "WHERE stage <> 'ENDED' ORDER BY seq")
BY_ID = f"SELECT {ROW} FROM runs WHERE instance_id=%s"
#: which of the given advisory keys are held exclusively by some session of this database
HELD = (
    "SELECT ((classid::bigint << 32) | objid::bigint) FROM pg_locks "
    "WHERE locktype = 'advisory' AND objsubid = 1 AND granted AND mode = 'ExclusiveLock' "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND ((classid::bigint << 32) | objid::bigint) = ANY(%s)"
)


def _char(c: str) -> str:
    """One character inside a bracket expression, as a character-entry escape."""
    return f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}"


def _bracket(stuff: str) -> str:
    """fnmatch's set `[stuff]` (stuff without the brackets) in PostgreSQL's syntax, with the same
    rules as fnmatch.translate: `!` negates, `a-b` ranges, empty ranges dropped, `-` at either end
    literal."""
    if "-" not in stuff:
        chunks = [stuff]
    else:
        chunks = []
        i, j = 0, len(stuff)
        k = 2 if stuff[0] == "!" else 1
        while True:
            k = stuff.find("-", k, j)
            if k < 0:
                break
            chunks.append(stuff[i:k])
            i = k + 1
            k = k + 3
        chunk = stuff[i:j]
        if chunk:
            chunks.append(chunk)
        else:
            chunks[-1] += "-"
        for k in range(len(chunks) - 1, 0, -1):  # remove empty ranges
            if chunks[k - 1][-1] > chunks[k][0]:
                chunks[k - 1] = chunks[k - 1][:-1] + chunks[k][1:]
                del chunks[k]
    neg = chunks[0].startswith("!")
    if neg:
        chunks[0] = chunks[0][1:]
    items: list[tuple[str, str]] = []
    for n, chunk in enumerate(chunks):
        chars = list(chunk)
        if n > 0 and items and chars:  # chunks are joined by range hyphens
            lo = items.pop()[0]
            items.append((lo, chars.pop(0)))
        items.extend((c, c) for c in chars)
    if not items:
        return "." if neg else "x^"  # a negated empty set: any character; an empty one: nothing
    body = "".join(_char(lo) if lo == hi else f"{_char(lo)}-{_char(hi)}" for lo, hi in items)
    return f"[{'^' if neg else ''}{body}]"


def glob_to_regex(p: str) -> str:
    """An fnmatch glob (case-sensitive, whole string) as a PostgreSQL regular expression."""
    out = ["^"]
    i, n = 0, len(p)
    while i < n:
        c = p[i]
        i += 1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i
            if j < n and p[j] == "!":
                j += 1
            if j < n and p[j] == "]":
                j += 1
            while j < n and p[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: a literal [
                out.append("\\[")
                continue
            out.append(_bracket(p[i:j]))
            i = j + 1
        elif c.isascii() and (c.isalnum() or c == "_"):
            out.append(c)
        else:
            out.append("\\" + c)
    out.append("$")
    return "".join(out)


def _match_sql(p: str) -> tuple[str, list[str]]:
    rx = glob_to_regex(p)
    if "@" in p:
        return "instance_id ~ %s", [rx]
    return ("(job_id ~ %s OR run_id ~ %s OR EXISTS (SELECT 1 FROM jsonb_array_elements_text(runs.tags) t "
            "WHERE t ~ %s))", [rx, rx, rx])


def _status_in(values: list[str]) -> tuple[str, list[Any]]:
    return ("status = ANY(%s)", [values]) if values else ("FALSE", [])


def query_sql(q: RunQuery) -> tuple[str, list[Any]]:
    from runtools.env.filters import run_filters

    where, params = run_filters(q, "%s", _match_sql, _status_in)
    cond = (" WHERE " + " AND ".join(where)) if where else ""
    direction = "ASC" if q.ascending else "DESC"
    if q.last_per_job:
        inner = f"SELECT DISTINCT ON (job_id) {ROW}, seq FROM runs{cond} ORDER BY job_id, created_at DESC, seq DESC"
        sql = f"SELECT {ROW} FROM ({inner}) last ORDER BY created_at {direction}, seq {direction}"
    elif q.active is True or q.run_key is not None:
        sql = f"SELECT {ROW} FROM runs{cond} ORDER BY seq {direction}"
    else:
        sql = f"SELECT {ROW} FROM runs{cond} ORDER BY created_at {direction}, seq {direction}"
    if q.limit is not None:
        sql += " LIMIT %s"
        params.append(int(q.limit))
    return sql, params


def env_output_dir(display: str, schema: str) -> str:
    """Where this host keeps the full output files of the runs it executes in the environment."""
    from runtools.env.local.paths import runtools_home

    return os.path.join(runtools_home(), "postgres", short_hash(display, schema))
