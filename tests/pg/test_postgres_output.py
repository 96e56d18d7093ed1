"""The copy of a run's output kept in the postgres environment: written in batches (not one
statement per chunk), complete once the run's end is recorded, and read from another host with
a word on stderr when it has a hole."""

from __future__ import annotations

import os

import psycopg

from runtools.env.postgres.store import split_url

from .server import postgres_url


def admin(url: str) -> psycopg.Connection:
    libpq, schema = split_url(url)
    conn = psycopg.connect(libpq, autocommit=True)
    conn.execute(f'SET search_path TO "{schema}"')
    return conn


def test_output_is_written_in_batches_and_whole_when_the_run_ends(cli):
    url = postgres_url()
    # 60 lines, each its own chunk (the command pauses between them), within ~0.6 s
    script = "for i in $(seq 1 60); do echo line $i; sleep 0.01; done"
    p = cli.run("-e", url, "--id", "lines", "--", "sh", "-c", script)
    assert p.returncode == 0, p.stderr
    (r,) = cli.history("-e", url)
    with admin(url) as conn:
        rows = conn.execute("SELECT data FROM output_chunks WHERE instance_id=%s AND stream='stdout' ORDER BY seq",
                            (f"lines@{r['run_id']}",)).fetchall()
    stored = b"".join(bytes(d) for (d,) in rows)
    assert stored == b"".join(b"line %d\n" % i for i in range(1, 61))  # all of it, in order
    assert len(rows) < 40, len(rows)  # one row per batch of ~50 ms, not one per chunk (60)


def test_output_and_tail_from_another_host_say_when_the_stored_copy_has_a_hole(cli):
    url = postgres_url()
    script = "echo first; sleep 0.2; echo second; sleep 0.2; echo third; sleep 0.2; echo fourth"
    p = cli.run("-e", url, "--id", "holey", "--", "sh", "-c", script)
    assert p.returncode == 0, p.stderr
    (r,) = cli.history("-e", url)
    iid = f"holey@{r['run_id']}"
    with admin(url) as conn:  # a chunk that never reached the database (a write lost)
        rows = conn.execute("SELECT seq, data FROM output_chunks WHERE instance_id=%s AND stream='stdout' "
                            "ORDER BY seq", (iid,)).fetchall()
        assert [bytes(d) for _s, d in rows] == [b"first\n", b"second\n", b"third\n", b"fourth\n"]
        conn.execute("DELETE FROM output_chunks WHERE seq=%s", (rows[1][0],))
    os.rename(r["stdout_path"], r["stdout_path"] + ".away")  # as seen from another host
    o = cli.taro("output", "-e", url, "holey")
    assert (o.returncode, o.stdout) == (0, "first\nthird\nfourth\n"), o.stderr
    assert "misses 7 bytes in 1 place(s)" in o.stderr
    assert f"whole output is on {r['host']}: {r['stdout_path']}" in o.stderr
    t = cli.taro("tail", "-e", url, "-n", "5", "holey")
    assert (t.returncode, t.stdout) == (0, "first\nthird\nfourth\n")
    assert "misses 7 bytes" in t.stderr
    t = cli.taro("tail", "-e", url, "-n", "1", "holey")  # the hole is not in what is shown
    assert (t.returncode, t.stdout, t.stderr) == (0, "fourth\n", "")
