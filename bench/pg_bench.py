"""postgres environment benchmarks (issue 9), on a throwaway server started by this script.

1. `run job -- true` wall time on postgres against local (medians).
2. Cross-host queue hand-off: one `--serial` holder, K runs queued behind it that alternate
   RUNTOOLS_HOST between two "hosts"; each hand-off is `started_at` of a run minus `ended_at`
   of the run before it, from the store (p50/p95).
3. Coordinated starts through one mutex: W wrappers started at once on one `--max-concurrent 4`
   group, each running `true`: runs per second of wall time; and in one process, runs of a
   function through `runtools.run(..., max_concurrent=1)` one after another.
   In process also: statements sent per run (each a round trip; the lease's 1 s probe included),
   and transactions the server counted per run (pg_stat_database: each autocommit statement is one).
4. `taro ps` and `taro history -n 20` with 1k, 100k and 1M ended runs in the store.
5. Connections (pg_stat_activity) of one running wrapper, and of K wrappers queued behind it.

    .venv/bin/python bench/pg_bench.py [--handoffs 30] [--wrappers 100] [--rows 1000,100000,1000000]
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pg.server import Server  # noqa: E402  (the tests' throwaway server)


def env_vars(home: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ, RUNTOOLS_HOME=home, XDG_RUNTIME_DIR=home + "/rt", **extra)
    env.pop("RUNTOOLS_ENV", None)
    os.makedirs(home + "/rt", mode=0o700, exist_ok=True)
    return env


def wall(argv: list[str], env: dict[str, str], n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p * (len(values) - 1)))]


def handoffs(url: str, home: str, k: int) -> list[float]:
    from runtools.env.base import RunQuery
    from runtools.env.postgres import PostgresEnvironment
    from runtools.model.criteria import RunMatcher

    env = env_vars(home)
    run = [str(BIN / "run"), "job", "-e", url, "--serial", "--id", "hand"]
    holder = subprocess.Popen([*run, "--", "sh", "-c", "read _"], env=env, stdin=subprocess.PIPE)
    with PostgresEnvironment(url) as pg:
        def active() -> int:
            return len(pg.find_runs(RunQuery(matcher=RunMatcher.parse("hand"), active=True)))

        while active() < 1:
            time.sleep(0.01)
        procs = []
        for i in range(k):  # queued in order, alternating hosts
            procs.append(subprocess.Popen([*run, "--", "true"], env=dict(env, RUNTOOLS_HOST=f"host-{'ab'[i % 2]}")))
            while active() < i + 2:
                time.sleep(0.01)
        assert holder.stdin is not None
        holder.stdin.close()
        for p in [holder, *procs]:
            p.wait(120)
        runs = pg.find_runs(RunQuery(matcher=RunMatcher.parse("hand"), ascending=True))
    out = []
    for prev, nxt in itertools.pairwise(runs):
        assert prev.ended_at is not None and nxt.started_at is not None
        out.append(nxt.started_at - prev.ended_at)
    return out


def starts(url: str, home: str, w: int) -> float:
    env = env_vars(home)
    t = time.perf_counter()
    procs = [subprocess.Popen([str(BIN / "run"), "job", "-e", url, "--max-concurrent", "4", "--id", "many", "--",
                               "true"], env=dict(env, RUNTOOLS_HOST=f"host-{i % 3}")) for i in range(w)]
    for p in procs:
        assert p.wait(300) == 0
    return w / (time.perf_counter() - t)


def inproc(url: str, n: int) -> tuple[float, float, float]:
    """Runs per second of `runtools.run(fn, max_concurrent=1)` in one process, one after another
    (each: lease, control endpoint, decisions, end), with one environment object; statements
    sent per run (counted in a second pass, so the count costs the rate nothing); transactions
    the server counted per run."""
    import psycopg

    import runtools

    with runtools.environment(url) as env:
        runtools.run(lambda: None, job_id="warm", env=env)
        before = server_xacts(url)
        t = time.perf_counter()
        for _ in range(n):
            runtools.run(lambda: None, job_id="inproc", env=env, max_concurrent=1)
        rate = n / (time.perf_counter() - t)
        xacts = (server_xacts(url) - before - 1) / n
        sent = [0]
        execute = psycopg.Connection.execute

        def counted(self: psycopg.Connection, *a: Any, **kw: Any) -> Any:
            sent[0] += 1
            return execute(self, *a, **kw)

        psycopg.Connection.execute = counted  # type: ignore[method-assign,assignment]
        try:
            for _ in range(50):
                runtools.run(lambda: None, job_id="inproc", env=env, max_concurrent=1)
        finally:
            psycopg.Connection.execute = execute  # type: ignore[method-assign]
    return rate, sent[0] / 50, xacts


def server_xacts(url: str) -> int:
    """Transactions the server committed or rolled back in this database so far (each
    autocommit statement is one). Statistics reach the view when sessions go idle: wait."""
    import psycopg

    from runtools.env.postgres.store import split_url

    time.sleep(1.5)
    with psycopg.connect(split_url(url)[0], autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                           "WHERE datname = current_database()").fetchone()
    assert row is not None
    return int(row[0])


def connections(url: str, home: str, k: int) -> tuple[int, int]:
    """pg_stat_activity sessions of one running wrapper, and of it with `k` wrappers queued
    behind it (one --serial line)."""
    import psycopg

    from runtools.env.base import RunQuery
    from runtools.env.postgres import PostgresEnvironment
    from runtools.env.postgres.store import split_url
    from runtools.model.criteria import RunMatcher

    app = f"rt_bench_{os.getpid()}"
    url = f"{url}&application_name={app}"
    env = env_vars(home)
    run = [str(BIN / "run"), "job", "-e", url, "--serial", "--id", "conn"]
    holder = subprocess.Popen([*run, "--", "sh", "-c", "read _"], env=env, stdin=subprocess.PIPE)
    procs = []
    with PostgresEnvironment(url) as pg, psycopg.connect(split_url(url)[0], autocommit=True) as admin:
        def queued() -> int:
            return len(pg.find_runs(RunQuery(matcher=RunMatcher.parse("conn"), active=True)))

        def sessions() -> int:
            time.sleep(0.5)  # a wrapper's connections are made within its first moments
            row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                                "AND pid <> pg_backend_pid()", (app,)).fetchone()
            assert row is not None
            return int(row[0]) - 1  # without this process's environment (its main connection)

        while queued() < 1:
            time.sleep(0.01)
        one = sessions()
        for i in range(k):
            procs.append(subprocess.Popen([*run, "--", "true"], env=env))
            while queued() < i + 2:
                time.sleep(0.01)
        many = sessions()
    assert holder.stdin is not None
    holder.stdin.close()
    for p in [holder, *procs]:
        p.wait(120)
    return one, many


def fill(url: str, rows: int) -> None:
    """`rows` ended runs, made on the server from one real record (ids and times varied)."""
    import psycopg

    from runtools.env.postgres.store import split_url

    libpq, schema = split_url(url)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        (have,) = conn.execute("SELECT count(*) FROM runs").fetchone()  # type: ignore[misc]
        data, seed_run = conn.execute("SELECT data, run_id FROM runs WHERE job_id='seed'").fetchone()  # type: ignore[misc]
        n = rows - have
        if n <= 0:
            return
        conn.execute(
            "INSERT INTO runs (instance_id, job_id, run_id, stage, status, created_at, ended_at, run_key, tags, data) "
            "SELECT 'j' || (g %% 500) || '@r' || g, 'j' || (g %% 500), 'r' || g, 'ENDED', 'COMPLETED', "
            "1.7e9 + g, 1.7e9 + g + 1, NULL, '[]', "
            "replace(replace(%s, '\"seed\"', '\"j' || (g %% 500) || '\"'), %s, 'r' || g) "
            "FROM generate_series(%s::bigint, %s::bigint) g",
            (data, seed_run, have, have + n - 1))
        conn.execute("ANALYZE runs")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--handoffs", type=int, default=30)
    ap.add_argument("--wrappers", type=int, default=100)
    ap.add_argument("--rows", default="1000,100000,1000000")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--parts", default="wall,handoff,starts,inproc,conns,rows",
                    help="which measurements (comma-separated)")
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    server = Server()
    home = tempfile.mkdtemp(prefix="rt-pgbench-")
    try:
        server.start()
        url = server.url("bench")
        env = env_vars(home)
        run = str(BIN / "run")
        subprocess.run([run, "job", "--", "true"], env=env, check=True)
        subprocess.run([run, "job", "-e", url, "--id", "seed", "--", "true"], env=env, check=True)
        if "wall" in parts:
            local = wall([run, "job", "--", "true"], env, a.repeat)
            pg = wall([run, "job", "-e", url, "--", "true"], env, a.repeat)
            print(f"run job -- true: local {local * 1000:.0f} ms, postgres {pg * 1000:.0f} ms (median of {a.repeat})")
            py = wall([sys.executable, "-c", "import psycopg"], env, a.repeat)
            floor = wall([sys.executable, "-c", "pass"], env, a.repeat)
            print(f"  floor: python -c pass {floor * 1000:.0f} ms; python -c 'import psycopg' {py * 1000:.0f} ms")
        if "handoff" in parts:
            h = handoffs(server.url("handoff"), home, a.handoffs)
            print(f"cross-host queue hand-off ({len(h)}): p50 {pct(h, 0.5) * 1000:.1f} ms, "
                  f"p95 {pct(h, 0.95) * 1000:.1f} ms, max {max(h) * 1000:.1f} ms")
        if "starts" in parts:
            rate = starts(server.url("starts"), home, a.wrappers)
            print(f"{a.wrappers} wrappers at once through one --max-concurrent 4 group: {rate:.0f} runs/s")
        if "inproc" in parts:
            rate, sent, xacts = inproc(server.url("inproc"), 200)
            print(f"in-process runtools.run(fn, max_concurrent=1), one after another: {rate:.0f} runs/s "
                  f"({sent:.1f} statements sent per run, {xacts:.1f} transactions on the server)")
        if "conns" in parts:
            one, many = connections(server.url("conns"), home, 10)
            print(f"connections: one running wrapper {one}; with 10 queued behind it {many} "
                  f"({(many - one) / 10:.1f} per queued wrapper)")
        for rows in (int(x) for x in a.rows.split(",") if "rows" in parts):
            t = time.perf_counter()
            fill(url, rows)
            made = time.perf_counter() - t
            ps = wall([str(BIN / "taro"), "ps", "-e", url], env, a.repeat)
            hist = wall([str(BIN / "taro"), "history", "-n", "20", "-e", url], env, a.repeat)
            print(f"{rows:>9} rows (filled in {made:.1f} s): taro ps {ps * 1000:.0f} ms, "
                  f"taro history -n 20 {hist * 1000:.0f} ms")
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
