"""runcue services shared through an environment with `run job --service` (real processes).

Runs on the local environment and, with RUNTOOLS_TEST_ENV=postgres, on postgres.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time

import pytest

from runcue import Cue
from runtools.model.status import Status


def env_name() -> str:
    return os.environ.get("RUNTOOLS_ENV") or "local"


def records(job: str):
    from runtools.env import open_environment
    from runtools.env.base import RunQuery
    from runtools.model.criteria import RunMatcher

    with open_environment(env_name()) as env:
        env.active_runs()
        return env.find_runs(RunQuery(matcher=RunMatcher.parse(job), ascending=True))


def test_shared_needs_an_environment_and_a_definition(cli):
    with pytest.raises(ValueError, match="no environment"):
        Cue().service("api", shared=True)
    with pytest.raises(ValueError, match="Unknown service: api"):
        Cue(env=env_name()).service("api", shared=True)
    cli.taro("service", "set", "api", "--rate", "5/s")
    with pytest.raises(ValueError, match="limits come from the environment"):
        Cue(env=env_name()).service("api", shared=True, rate="1/s")


def test_a_cue_and_cli_runs_share_one_rate(cli):
    """rate 10/s: 25 cue work units and 15 `run job --service` runs at once; counted together,
    never more than 10 starts in any second, and the limit is reached."""
    limit = 10
    cli.taro("service", "set", "api", "--rate", f"{limit}/s")
    loop = f"for i in 1 2 3; do {cli.bin('run')} job --id cli --service api -- true || exit 1; done"
    procs = [cli.spawn(["sh", "-c", loop]) for _ in range(5)]
    starts: list[float] = []

    async def main() -> None:
        cue = Cue(env=env_name())
        cue.service("api", shared=True)

        @cue.task("call", uses="api")
        async def call(work):
            starts.append(time.time())

        cue.start()
        for i in range(25):
            await cue.submit("call", {"i": i})
        await asyncio.wait_for(cue.join(), 60)
        await cue.stop()

    asyncio.run(main())
    for p in procs:
        assert p.wait(60) == 0, p.stderr.read()
    cli_at = [r.coord["service_at"] for r in records("cli")]
    assert len(starts) == 25 and len(cli_at) == 15
    at = sorted(starts + cli_at)
    gaps = [at[i + limit] - at[i] for i in range(len(at) - limit)]
    assert min(gaps) >= 1.0 - 0.002, f"{limit + 1} starts within {min(gaps):.4f}s"  # cue: its own clock reading
    span = at[-1] - at[0]
    assert span < (len(at) / limit - 1) * 1.0 + 1.5, f"the limit was not reached: {span:.2f}s for {len(at)}"
    (holder,) = records("runcue")
    assert holder.status is Status.COMPLETED and not holder.coord.get("service_hold")


def test_a_cue_gives_slots_back_to_a_waiting_run(cli, wait_until):
    """concurrent 2, a cue with a long backlog: a `run job --service` that arrives gets a slot when
    one of the cue's work units ends (FIFO), and the two never hold more than 2 together."""
    cli.taro("service", "set", "db", "--concurrent", "2")
    spans: list[tuple[float, float]] = []
    state: dict = {}

    async def main() -> None:
        cue = Cue(env=env_name())
        cue.service("db", shared=True)

        @cue.task("q", uses="db")
        async def q(work):
            t0 = time.time()
            await asyncio.sleep(0.15)
            spans.append((t0, time.time()))

        cue.start()
        for i in range(12):
            await cue.submit("q", {"i": i})
        await asyncio.sleep(0.3)
        state["proc"] = cli.spawn_run("--id", "cli", "--service", "db", "--", "sleep", "0.2")
        await asyncio.wait_for(cue.join(), 60)
        await cue.stop()

    asyncio.run(main())
    assert state["proc"].wait(30) == 0
    (run,) = records("cli")
    spans.append((run.started_at, run.ended_at))
    points = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans], key=lambda p: (p[0], p[1]))
    level = peak = 0
    for _, d in points:
        level += d
        peak = max(peak, level)
    assert peak <= 2
    cue_after = [a for a, _ in spans[:-1] if a > run.started_at]
    assert cue_after, "the run waited for the cue's whole backlog: no slot was given back"


def test_a_killed_cue_frees_its_slots_at_once(cli, wait_until, tmp_path):
    cli.taro("service", "set", "db", "--concurrent", "2")
    script = tmp_path / "cue.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio
        from runcue import Cue
        async def main():
            cue = Cue(env={env_name()!r})
            cue.service("db", shared=True)
            @cue.task("hold", uses="db")
            async def hold(work):
                print("holding", flush=True)
                await asyncio.sleep(60)
            cue.start()
            for i in range(2):
                await cue.submit("hold", {{"i": i}})
            await asyncio.sleep(120)
        asyncio.run(main())
    """))
    cue_proc = cli.spawn([sys.executable, str(script)])
    cli.read_lines(cue_proc, lambda line: line == b"holding", timeout=20)
    wait_until(lambda: cli.json("service", "show", "db")["in_use"] == 2, what="cue holds 2")
    waiter = cli.spawn_run("--id", "cli", "--service", "db", "--", "true")
    wait_until(lambda: cli.json("service", "show", "db")["waiting"], what="cli waiting")
    killed = time.time()
    os.kill(cue_proc.pid, signal.SIGKILL)
    assert waiter.wait(30) == 0
    (run,) = records("cli")
    assert run.coord["service_at"] - killed < 1.0
    (holder,) = records("runcue")
    assert holder.status is Status.LOST


def test_a_cue_takes_its_place_in_line_behind_waiting_runs(cli, wait_until):
    """concurrent 1, held by a run; a run waits; then a cue wants the service: it waits behind
    that run (FIFO over runs and cues), and `taro service show` lists both in order."""
    cli.taro("service", "set", "db", "--concurrent", "1")
    holder = cli.spawn_gated("hold", "--service", "db")
    cli.wait_state("hold", "EXECUTING")
    first = cli.spawn_run("--id", "first", "--service", "db", "--", "true")
    wait_until(lambda: cli.json("service", "show", "db")["waiting"], what="first waiting")
    starts: list[float] = []
    line: list[list[str]] = []

    async def main() -> None:
        cue = Cue(env=env_name())
        cue.service("db", shared=True)

        @cue.task("q", uses="db")
        async def q(work):
            starts.append(time.time())

        cue.start()
        await cue.submit("q", {})
        for _ in range(200):  # the cue's lease transaction runs on its own thread
            waiting = [w["instance_id"].split("@")[0] for w in cli.json("service", "show", "db")["waiting"]]
            if len(waiting) == 2:
                line.append(waiting)
                break
            await asyncio.sleep(0.05)
        (why,) = cue.debug_blocked()
        assert why["reason"] == "service_full" and "shared service 'db'" in why["details"]
        cli.release(holder)
        await asyncio.wait_for(cue.join(), 30)
        await cue.stop()

    asyncio.run(main())
    assert line == [["first", "runcue"]]
    assert first.wait(30) == 0 and holder.wait(30) == 0
    (run,) = records("first")
    assert starts and run.coord["service_at"] < starts[0]


@pytest.mark.skipif(os.environ.get("RUNTOOLS_TEST_ENV") != "postgres", reason="a postgres lease cut")
def test_a_cue_whose_lease_is_lost_stops_dispatching(cli, monkeypatch, wait_until):
    import psycopg

    from pg.server import postgres_url
    from pg.test_postgres_leases import cut_and_hold, lease_holder
    from runtools.env.postgres import PostgresEnvironment
    from runtools.env.postgres.store import split_url

    monkeypatch.setenv("RUNTOOLS_PG_LEASE_GRACE", "2")
    cli.taro("service", "set", "db", "--concurrent", "1")
    url = env_name()
    started: list[float] = []

    async def main() -> None:
        cue = Cue(env=url)
        cue.service("db", shared=True)
        gate = asyncio.Event()

        @cue.task("q", uses="db")
        async def q(work):
            started.append(time.time())
            await gate.wait()

        cue.start()
        await cue.submit("q", {})
        await cue.submit("q", {})
        while not started:
            await asyncio.sleep(0.02)
        rec = cue._shared.record
        key = PostgresEnvironment(url).lease_key(rec.instance_id)
        with psycopg.connect(split_url(postgres_url())[0], autocommit=True) as admin:
            for _attempt in range(5):  # the cue takes its lease again within ms: grab it server-side
                if cut_and_hold(admin, lease_holder(admin, key), key):
                    break
            else:
                pytest.fail("the cue took its lease again before the test could hold it, 5 times")
            for _ in range(200):  # the grace (2 s), then the cue gives up its slots
                if cue._shared._stopping:
                    break
                await asyncio.sleep(0.05)
            assert cue._shared._stopping
            gate.set()  # the first unit ends: a healthy cue would start the second now
            await asyncio.sleep(0.5)
            admin.execute("SELECT pg_advisory_unlock(%s)", (key,))
        await cue.stop(timeout=0)

    asyncio.run(main())
    assert len(started) == 1
