"""Never two copies: the fence of the postgres environment under real cuts (docs/postgres.md,
"Timings"). Two hosts are played with RUNTOOLS_HOST; every command appends ticks (its label,
pid and the time, every 10 ms) to one file opened O_APPEND, and each test checks that the ticks
of two copies never interleave, and that the taker did proceed within the documented bound.

- both of a run's connections terminated (pg_terminate_backend): the wrapper takes its keys
  again and nobody takes over; or, when it cannot, it kills its command before a taker starts;
- the wrapper SIGKILLed (its command keeps the lease), then the lease connection cut: the
  guardian kills the command before a taker starts;
- the wrapper alone frozen (SIGSTOP), then both connections cut: the guardian kills the command;
- the whole holder frozen past the server dropping its sessions: on resuming it kills its
  command at once;
- the crash case (wrapper and command killed): the next run executes within 1 s.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import time
from contextlib import contextmanager
from datetime import datetime

import psycopg
import pytest

from conftest import pid_alive, processes
from runtools.env.postgres import PostgresEnvironment
from runtools.env.postgres.store import DEFAULT_FENCE_S, split_url

from .server import server

#: the fence's W_t (RUNTOOLS_PG_FENCE, default): a taker never proceeds sooner after a cut
FENCE = DEFAULT_FENCE_S
#: what a taker needs beyond the fence to show its first tick (a decision, a spawn of Python):
#: generous, the machine running the tests is shared
SLACK = 2.5
#: ticks of one copy closer than this show it executing in between (it ticks every 10 ms)
GAP = 0.25

TICK = (
    "import os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)\n"
    "end = time.time() + float(sys.argv[3])\n"
    "while True:\n"
    "    os.write(fd, f'{sys.argv[2]} {os.getpid()} {time.time():.6f}\\n'.encode())\n"
    "    if time.time() >= end:\n"
    "        break\n"
    "    time.sleep(0.01)\n"
)


def ticking(log: str, label: str, seconds: float) -> list[str]:
    return ["--", sys.executable, "-c", TICK, log, label, str(seconds)]


def ticks(log: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    try:
        with open(log) as f:
            for line in f:
                label, _pid, at = line.split()
                out.setdefault(label, []).append(float(at))
    except FileNotFoundError:
        pass
    return out


def never_two_copies(log: str) -> dict[str, list[float]]:
    """The ticks of each copy, asserted never to fall between two ticks of another copy that are
    less than GAP apart (it was executing then). A longer gap is a copy that was not executing
    (frozen, killed): the frozen case resumes after the taker's copy ended."""
    found = ticks(log)
    for a, mine in found.items():
        for b, theirs in found.items():
            if a == b:
                continue
            for t0, t1 in itertools.pairwise(mine):
                if t1 - t0 < GAP:
                    inside = [t for t in theirs if t0 < t < t1]
                    assert not inside, f"{b} ticked at {inside[0]:.3f} while {a} executed ({t0:.3f}-{t1:.3f})"
    return found


@pytest.fixture
def db():
    """A database of its own on the session's server (so a test can refuse new connections to
    it), the admin's connection to the server, and the URL of a schema in it."""
    srv = server()
    name = "fence_" + os.urandom(4).hex()
    admin = psycopg.connect(split_url(srv.url())[0], autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    url = srv.url("t_fence").replace("/postgres?", f"/{name}?")
    try:
        yield admin, url, name
    finally:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


@contextmanager
def refusing(admin: psycopg.Connection, name: str):
    """New connections to database `name` are refused (its wrappers cannot take keys again)."""
    admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        yield
    finally:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def holders(admin: psycopg.Connection, keys: list[int]) -> dict[int, int]:
    """key -> the backend pid holding it."""
    found = admin.execute(
        "SELECT ((classid::bigint << 32) | objid::bigint), pid FROM pg_locks WHERE locktype = 'advisory' "
        "AND objsubid = 1 AND granted AND ((classid::bigint << 32) | objid::bigint) = ANY(%s)", (keys,)).fetchall()
    return dict(found)


def keys_of(url: str, instance_id: str) -> tuple[int, int]:
    env = PostgresEnvironment(url)
    return env.lease_key(instance_id), env._control_key(instance_id)


def terminate(admin: psycopg.Connection, pids: list[int]) -> None:
    admin.execute("SELECT pg_terminate_backend(p) FROM unnest(%s::int[]) p", (pids,))


def state_of(cli, url: str, job_tag: str) -> str | None:
    p = cli.taro("ps", "-e", url, "--json")
    if p.returncode != 0:
        return None
    import json

    for r in json.loads(p.stdout):
        if job_tag in r.get("tags", []):
            return r["state"]
    return None


def executing_run(cli, url: str, tag: str) -> dict | None:
    import json

    p = cli.taro("ps", "-e", url, "--json")
    if p.returncode != 0:
        return None
    return next((r for r in json.loads(p.stdout) if tag in r.get("tags", []) and r["state"] == "EXECUTING"), None)


def guardian_of(wrapper: int, command: int) -> int:
    """The guardian: the wrapper's child that is not its command."""
    for pid, fields in processes():
        if pid != command and int(fields[1]) == wrapper and fields[0] != b"Z":
            return pid
    raise AssertionError(f"no guardian process under wrapper {wrapper}")


def holder_and_taker(cli, url: str, log: str, wait_until, hold: float = 60, env: dict | None = None):
    """A holder (host-a) ticking as A, and a taker (host-b) queued behind it that ticks as B for
    0.3 s once its turn comes: (holder process, its run, taker process)."""
    env = env or {}
    a = cli.spawn_run("-e", url, "--serial", "--id", "job", "--tag", "a", *ticking(log, "A", hold),
                      env={**env, "RUNTOOLS_HOST": "host-a"})
    run = wait_until(lambda: executing_run(cli, url, "a"), 15, "the holder to execute")
    wait_until(lambda: ticks(log).get("A"), 10, "the holder's command to tick")
    b = cli.spawn_run("-e", url, "--serial", "--id", "job", "--tag", "b", *ticking(log, "B", 0.3),
                      env={**env, "RUNTOOLS_HOST": "host-b"})
    wait_until(lambda: state_of(cli, url, "b") == "QUEUED", 15, "the taker to queue")
    return a, run, b


def test_both_connections_cut_the_holder_takes_its_keys_again_and_nobody_takes_over(cli, db, wait_until, tmp_path):
    admin, url, _name = db
    log = str(tmp_path / "ticks")
    a, run, b = holder_and_taker(cli, url, log, wait_until, hold=4)
    keys = list(keys_of(url, run["instance_id"]))
    before = holders(admin, keys)
    assert set(before) == set(keys)
    terminate(admin, list(before.values()))
    # the taker's lease wait returns at once; its decision waits out the fence and finds the keys
    # held again (other sessions): the blip costs nothing
    old = set(before.values())
    wait_until(lambda: set(holders(admin, keys)) == set(keys) and not set(holders(admin, keys).values()) & old, 5,
               "the keys taken again by new sessions")
    assert a.wait(20) == 0, a.stderr.read()
    assert b.wait(20) == 0, b.stderr.read()
    found = never_two_copies(log)
    assert found["A"][-1] - found["A"][0] >= 3.5  # A ticked on through the cut, to its end
    statuses = {r["host"]: r["status"] for r in cli.history("-e", url)}
    assert statuses == {"host-a": "COMPLETED", "host-b": "COMPLETED"}


def test_both_connections_cut_for_good_the_holder_kills_its_command_before_the_taker_starts(
        cli, db, wait_until, tmp_path):
    admin, url, name = db
    log = str(tmp_path / "ticks")
    a, run, b = holder_and_taker(cli, url, log, wait_until)
    keys = list(keys_of(url, run["instance_id"]))
    with refusing(admin, name):  # the wrapper cannot connect again: only the fence can save us
        terminate(admin, list(holders(admin, keys).values()))
        cut = time.time()
        assert b.wait(20) == 0, b.stderr.read()
    found = never_two_copies(log)
    assert found["B"][0] - cut >= FENCE  # the taker waited out the fence ...
    assert found["B"][0] - cut < FENCE + SLACK  # ... and not much more
    assert found["A"][-1] - cut < FENCE / 2 + 0.3  # the holder's command was killed within W_h (+ a tick)
    assert a.wait(30) == 125, a.stderr.read()
    (gone,) = [r for r in cli.history("-e", url) if r["host"] == "host-a"]
    assert gone["status"] in ("LOST", "ERROR")


def test_a_killed_wrappers_command_is_killed_by_its_guardian_when_its_lease_is_cut(cli, db, wait_until, tmp_path):
    admin, url, _name = db
    log = str(tmp_path / "ticks")
    a, run, b = holder_and_taker(cli, url, log, wait_until)
    lease, control = keys_of(url, run["instance_id"])
    first = holders(admin, [control])[control]
    os.kill(a.pid, signal.SIGKILL)
    a.wait(5)
    wait_until(lambda: holders(admin, [control]).get(control) != first, 5, "the wrapper's control connection to close")
    # the command (and its guardian) keep the lease: the run lives, the taker waits
    (held,) = holders(admin, [lease]).values()
    assert b.poll() is None and "B" not in ticks(log)
    terminate(admin, [held])
    cut = time.time()
    assert b.wait(20) == 0, b.stderr.read()
    found = never_two_copies(log)
    assert found["A"][-1] - cut < 0.3  # killed as soon as the guardian saw the cut
    assert FENCE <= found["B"][0] - cut < FENCE + SLACK
    wait_until(lambda: not pid_alive(run["child_pid"]), 5, "the command to be gone")
    (gone,) = [r for r in cli.history("-e", url) if r["host"] == "host-a"]
    assert gone["status"] == "LOST"


def test_a_frozen_wrapper_with_its_connections_cut_has_its_command_killed_by_its_guardian(
        cli, db, wait_until, tmp_path):
    admin, url, _name = db
    log = str(tmp_path / "ticks")
    a, run, b = holder_and_taker(cli, url, log, wait_until)
    keys = list(keys_of(url, run["instance_id"]))
    os.kill(a.pid, signal.SIGSTOP)  # the wrapper only (stuck): its command ticks on
    try:
        terminate(admin, list(holders(admin, keys).values()))
        cut = time.time()
        assert b.wait(20) == 0, b.stderr.read()
        found = never_two_copies(log)
        assert found["A"][-1] - cut < FENCE / 2 + 0.3  # the guardian's W_h: no word from the wrapper
        assert FENCE <= found["B"][0] - cut < FENCE + SLACK
    finally:
        os.kill(a.pid, signal.SIGCONT)
    assert a.wait(30) == 125, a.stderr.read()


def test_a_frozen_holder_resumed_after_others_took_over_kills_its_command_at_once(cli, db, wait_until, tmp_path):
    """The whole host frozen (wrapper, guardian and command: SIGSTOP) while the server drops its
    sessions (what keepalives do to a paused VM; here pg_terminate_backend). The taker proceeds
    after the fence; once thawed, the holder kills its command at once. The command itself runs
    for the instant before its wrapper is scheduled (no fencing tokens): measured here."""
    admin, url, _name = db
    log = str(tmp_path / "ticks")
    a, run, b = holder_and_taker(cli, url, log, wait_until)
    command = run["child_pid"]
    frozen = [command, guardian_of(a.pid, command), a.pid]  # thawed in this order: the command first
    keys = list(keys_of(url, run["instance_id"]))
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        terminate(admin, list(holders(admin, keys).values()))
        cut = time.time()
        assert b.wait(20) == 0, b.stderr.read()  # the taker ran its copy while A was frozen
        assert FENCE <= ticks(log)["B"][0] - cut < FENCE + SLACK
        time.sleep(max(0.0, cut + 2.5 - time.time()))  # the scenario: frozen for a while longer
    finally:
        thawed = time.time()
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    wait_until(lambda: not pid_alive(command), 5, "the holder's command to be killed")
    dead = time.time()
    assert dead - thawed < 1.0
    found = never_two_copies(log)
    after = [t - thawed for t in found["A"] if t > thawed]
    # the instant before its wrapper is scheduled and acts (10-40 ms measured on 2 busy cores; it
    # ticks every 10 ms): bounded in time, not in ticks
    assert all(t < 0.2 for t in after), after
    assert a.wait(30) == 125, a.stderr.read()


def test_wrapper_and_command_killed_the_next_run_executes_within_a_second(cli, db, wait_until, tmp_path):
    _admin, url, _name = db
    log = str(tmp_path / "ticks")
    a, run, b = holder_and_taker(cli, url, log, wait_until)
    os.kill(a.pid, signal.SIGKILL)
    os.killpg(run["child_pid"], signal.SIGKILL)
    killed = time.time()
    assert b.wait(20) == 0, b.stderr.read()
    never_two_copies(log)
    runs = {r["host"]: r for r in cli.history("-e", url)}
    started = datetime.fromisoformat(runs["host-b"]["started_at"]).timestamp()
    assert started - killed < 1.0  # the fence (0.7 s) included
    assert runs["host-a"]["status"] == "LOST"


def test_the_guardian_ends_with_the_command_and_is_reaped(tmp_path):
    """`import runtools` on postgres: every executed command's guardian is a fork of this process;
    none is left behind (no child, no zombie, no descriptor) after the runs."""
    import runtools

    from .server import postgres_url

    def children() -> list[int]:
        return [pid for pid, fields in processes() if int(fields[1]) == os.getpid()]

    with runtools.environment(postgres_url()) as env:
        assert runtools.run(["true"], job_id="warm", env=env).run.status.value == "COMPLETED"
        fds = len(os.listdir("/proc/self/fd"))
        ours = set(children())  # the test session's server
        for _ in range(5):
            r = runtools.run([sys.executable, "-c", "pass"], job_id="cmd", env=env, mutual_exclusion=True)
            assert r.run.status.value == "COMPLETED", r.run.error
            assert set(children()) == ours
        assert len(os.listdir("/proc/self/fd")) <= fds


def test_taro_stop_from_another_host_stops_the_command_of_a_killed_wrapper(cli, db, wait_until, tmp_path):
    """The guardian starts a keeper once the wrapper is gone: `taro stop` from another host asks
    it, and it stops the orphan as `taro stop` on its own host does (before: only from there)."""
    admin, url, _name = db
    log = str(tmp_path / "ticks")
    a = cli.spawn_run("-e", url, "--id", "job", "--tag", "a", *ticking(log, "A", 60), env={"RUNTOOLS_HOST": "host-a"})
    run = wait_until(lambda: executing_run(cli, url, "a"), 15, "the run to execute")
    keeper = PostgresEnvironment(url)._keeper_key(run["instance_id"])
    assert not holders(admin, [keeper])  # the wrapper lives: no keeper
    os.kill(a.pid, signal.SIGKILL)
    a.wait(5)
    wait_until(lambda: holders(admin, [keeper]), 15, "the keeper to start")
    p = cli.taro("stop", "-e", url, "--kill-after", "2s", run["instance_id"], env={"RUNTOOLS_HOST": "host-b"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"stopped {run['instance_id']} (its wrapper was gone"), p.stdout
    assert not pid_alive(run["child_pid"])
    (ended,) = cli.history("-e", url)
    assert ended["status"] == "STOPPED", ended
    assert ended["actions"][-1]["action"] == "stopped" and "wrapper was gone" in ended["actions"][-1]["reason"]
    wait_until(lambda: not holders(admin, [keeper]), 5, "the keeper to end with the command")

