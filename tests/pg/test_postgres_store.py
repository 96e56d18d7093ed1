"""The postgres backend's own pieces: URL handling, the glob translation, the schema, leases."""

from __future__ import annotations

import fnmatch
import string
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtools.env.base import RunQuery
from runtools.env.postgres.store import glob_to_regex, redact, split_url

from .server import postgres_url


@pytest.mark.parametrize("url, shown", [
    ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgres://u:p%40ss@h/db?schema=x", "postgres://u:***@h/db?schema=x"),
    ("postgresql://u@h/db?password=pw&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
    ("postgresql://u:a:b@h1:1,h2:2/db", "postgresql://u:***@h1:1,h2:2/db"),
    ("postgresql://h?user=u&PASSWORD=x", "postgresql://h?user=u&PASSWORD=***"),
    ("postgresql:///db", "postgresql:///db"),
])
def test_redact(url, shown):
    assert redact(url) == shown


@given(st.text(alphabet=string.ascii_letters + string.digits + "@:/=%", min_size=1, max_size=20))
def test_redact_hides_any_password(pw):
    """Whatever a password holds (raw `?`, `#` and `&` would end the URL's parts)."""
    assert f"{pw}x" not in redact(f"postgresql://user:{pw}x@host/db").removeprefix("postgresql://user")
    assert f"{pw}x" not in redact(f"postgresql://user@host/db?a=1&password={pw}x&b=2").removeprefix(
        "postgresql://user")


def test_split_url_strips_our_schema_option():
    assert split_url("postgresql://u@h/db?schema=abc&sslmode=disable") == (
        "postgresql://u@h/db?sslmode=disable", "abc")
    assert split_url("postgresql://u@h/db") == ("postgresql://u@h/db", "runtools")
    from runtools.errors import UsageError

    for bad in ("Upper", "1x", "a-b", "", "x" * 64, 'a"b'):
        with pytest.raises(UsageError):
            split_url(f"postgresql://u:pw@h/db?schema={bad}")


GLOB = st.text(alphabet="abZé*?[]!^-\\.$", max_size=8)
NAME = st.text(alphabet="abZé[]!^-\\.$", max_size=8)


@pytest.fixture(scope="module")
def pg():
    import psycopg

    with psycopg.connect(split_url(postgres_url())[0], autocommit=True) as conn:
        yield conn


@settings(max_examples=300, deadline=None)
@given(GLOB, NAME)
def test_glob_translation_matches_fnmatch(pg, pattern, name):
    """The SQL filter agrees with the Python matcher (RunMatcher uses fnmatchcase)."""
    (got,) = pg.execute("SELECT %s ~ %s", (name, glob_to_regex(pattern))).fetchone()
    assert got == fnmatch.fnmatchcase(name, pattern), glob_to_regex(pattern)


def test_schema_is_versioned_and_shared_by_two_environments():
    from runtools.env.postgres import PostgresEnvironment
    from runtools.env.postgres.store import SCHEMA_VERSION, migrations

    assert [v for v, _, _ in migrations()][-1] == SCHEMA_VERSION
    url = postgres_url()
    with PostgresEnvironment(url) as a, PostgresEnvironment(url) as b:
        assert not a.exists()
        with a.transaction() as tx:
            tx.put_setting("disabled", "x", {"by": "a"})
        assert b.exists()
        with b.transaction() as tx:
            assert tx.get_setting("disabled", "x") == {"by": "a"}


def test_python_api_runs_on_postgres_and_leaves_nothing_behind():
    import os

    import psycopg

    import runtools

    url = postgres_url()

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    def threads() -> int:
        return len(os.listdir("/proc/self/task"))

    with runtools.environment(url) as env, psycopg.connect(split_url(url)[0], autocommit=True) as admin:
        def sessions() -> int:
            (n,) = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'runtools'"
                                 ).fetchone()  # type: ignore[misc]
            return n

        assert runtools.run(lambda: 41 + 1, job_id="warm", env=env).value == 42
        before = (fds(), threads(), sessions())
        for i in range(20):
            r = runtools.run(lambda i=i: i, job_id="api", env=env, max_concurrent=1)
            assert (r.run.status.value, r.value) == ("COMPLETED", i)
        assert [x.job_id for x in env.find_runs(RunQuery(limit=1))] == ["api"]
        def grown() -> bool:  # (a thread of an earlier test may end meanwhile: fewer is fine)
            return any(now > then for now, then in zip((fds(), threads(), sessions()), before, strict=True))

        deadline = time.monotonic() + 5
        while grown() and time.monotonic() < deadline:
            time.sleep(0.01)  # a lease watcher thread finishing after its run
        assert not grown(), ((fds(), threads(), sessions()), before)
