"""The Environment contract (DESIGN §3), one suite for every backend.

The `env` fixture is parametrized over `BACKENDS`; a new backend (postgres) joins by adding a
factory there (skipping itself when its server is not configured). Tests use only the
`Environment` interface, except where marked local-only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtools.env.base import Environment, RunQuery
from runtools.env.memory import MemoryEnvironment
from runtools.errors import NotFoundError
from runtools.model.criteria import RunMatcher
from runtools.model.events import Event
from runtools.model.run import RunRecord
from runtools.model.status import Outcome, Stage, State, Status


def _memory(tmp_path: Path) -> Environment:
    return MemoryEnvironment(directory=str(tmp_path / "mem"))


def _local(tmp_path: Path) -> Environment:
    from runtools.env.local import LocalEnvironment

    return LocalEnvironment(str(tmp_path / "local-env"), name="contract")


def _postgres(tmp_path: Path) -> Environment:
    """A schema of its own on the session's throwaway server (tests/pg/server.py; skips, with
    the reason, where psycopg or the server binaries are missing — never under CI)."""
    from pg.server import postgres_url
    from runtools.env.postgres import PostgresEnvironment

    return PostgresEnvironment(postgres_url(), name="contract")


#: name -> factory(tmp_path) -> Environment
BACKENDS: dict[str, Callable[[Path], Environment]] = {"memory": _memory, "local": _local, "postgres": _postgres}


@pytest.fixture(params=sorted(BACKENDS))
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Environment]:
    e = BACKENDS[request.param](tmp_path)
    e.backend = request.param  # type: ignore[attr-defined]
    try:
        yield e
    finally:
        e.close()


T0 = 1_700_000_000.0


def rec(job: str, run: str, t: float = 0.0, **kw) -> RunRecord:
    return RunRecord(job_id=job, run_id=run, created_at=T0 + t, **kw)


def ended(job: str, run: str, t: float, status: Status, **kw) -> RunRecord:
    return rec(job, run, t, stage=Stage.ENDED, status=status, started_at=T0 + t, ended_at=T0 + t + 1, **kw)


def insert(env: Environment, *runs: RunRecord) -> None:
    with env.transaction() as tx:
        for r in runs:
            tx.insert(r)


def iids(runs: list[RunRecord]) -> list[str]:
    return [r.instance_id for r in runs]


def next_event(sub, pred: Callable[[Event], bool], timeout: float = 5.0) -> Event:
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        ev = sub.get(remaining)
        if ev is not None and pred(ev):
            return ev
    pytest.fail("expected event did not arrive")


# -- store -----------------------------------------------------------------------------------


def test_insert_get_round_trip(env):
    r = rec("job", "r1", tags=["t1", "t2"], host="h", user="u", pid=42, command=["echo", "hi"], run_key="k",
            coord={"excl_group": "g"}, extra={"any": [1, 2]}, progress={"completed": 1}, warnings=["w"],
            actions=[{"action": "stop", "by": "me", "at": T0, "reason": None}])
    insert(env, r)
    got = env.get_run("job@r1")
    assert got is not None and got.to_dict() == r.to_dict()
    with env.transaction() as tx:
        assert tx.get("job@r1").to_dict() == r.to_dict()
        assert tx.get("job@nope") is None
    assert env.get_run("nope@x") is None


def test_update_and_delete(env):
    r = rec("job", "r1")
    insert(env, r)
    r.stage, r.state, r.detail, r.started_at = Stage.RUNNING, State.EXECUTING, "doing", T0 + 1
    with env.transaction() as tx:
        tx.update(r)
    assert env.get_run("job@r1").to_dict() == r.to_dict()
    r.stage, r.status, r.exit_code, r.ended_at = Stage.ENDED, Status.FAILED, 3, T0 + 2
    with env.transaction() as tx:
        tx.update(r)
    got = env.get_run("job@r1")
    assert (got.stage, got.status, got.exit_code, got.outcome) == (Stage.ENDED, Status.FAILED, 3, "FAULT")
    with env.transaction() as tx:
        tx.delete("job@r1")
    assert env.get_run("job@r1") is None
    assert env.find_runs(RunQuery()) == []


def test_duplicate_insert_fails_and_rolls_back(env):
    insert(env, rec("job", "r1"))
    with pytest.raises(Exception), env.transaction() as tx:  # noqa: B017 - any backend error
        tx.insert(rec("other", "x"))
        tx.insert(rec("job", "r1"))
    assert iids(env.find_runs(RunQuery())) == ["job@r1"]


@pytest.fixture
def history(env) -> list[RunRecord]:
    """Seven runs, created in this order (t=0..6)."""
    runs = [
        ended("a", "r0", 0, Status.COMPLETED),
        ended("b", "r1", 1, Status.FAILED, tags=["nightly"]),
        ended("a", "r2", 2, Status.STOPPED, run_key="k1"),
        ended("c", "r3", 3, Status.TIMEOUT, tags=["nightly", "db"]),
        ended("b", "r4", 4, Status.COMPLETED, run_key="k1"),
        rec("a", "r5", 5, stage=Stage.RUNNING, state=State.EXECUTING),
        rec("d", "r6", 6, tags=["db"]),
    ]
    insert(env, *runs)
    return runs


def q(env, **kw) -> list[str]:
    if "matcher" in kw and not isinstance(kw["matcher"], RunMatcher):
        kw["matcher"] = RunMatcher.parse(kw["matcher"])
    return [r.run_id for r in env.find_runs(RunQuery(**kw))]


def test_find_orders_newest_first_or_ascending(env, history):
    assert q(env) == ["r6", "r5", "r4", "r3", "r2", "r1", "r0"]
    assert q(env, ascending=True) == ["r0", "r1", "r2", "r3", "r4", "r5", "r6"]
    assert q(env, limit=2) == ["r6", "r5"]
    assert q(env, limit=2, ascending=True) == ["r0", "r1"]
    assert q(env, limit=0) == []


def test_find_active_and_ended(env, history):
    assert q(env, active=True) == ["r6", "r5"]
    assert q(env, active=False) == ["r4", "r3", "r2", "r1", "r0"]
    assert q(env, active=False, limit=1) == ["r4"]


def test_find_since_until(env, history):
    assert q(env, since=T0 + 4) == ["r6", "r5", "r4"]
    assert q(env, until=T0 + 2) == ["r1", "r0"]
    assert q(env, since=T0 + 1, until=T0 + 3) == ["r2", "r1"]
    assert q(env, since=T0 + 100) == []


def test_find_statuses_and_outcomes(env, history):
    assert q(env, statuses=(Status.COMPLETED,)) == ["r4", "r0"]
    assert q(env, statuses=(Status.FAILED, Status.TIMEOUT)) == ["r3", "r1"]
    assert q(env, outcomes=(Outcome.ABORTED,)) == ["r2"]
    assert q(env, outcomes=(Outcome.REJECTED, Outcome.FAULT)) == ["r3", "r1"]
    assert q(env, statuses=(Status.COMPLETED,), outcomes=(Outcome.FAULT,)) == []
    assert q(env, statuses=(Status.COMPLETED, Status.FAILED), outcomes=(Outcome.FAULT,)) == ["r1"]


def test_find_run_key(env, history):
    assert q(env, run_key="k1") == ["r4", "r2"]
    assert q(env, run_key="nope") == []


@pytest.mark.parametrize("patterns, expected", [
    (["a"], ["r5", "r2", "r0"]),
    (["a", "b"], ["r5", "r4", "r2", "r1", "r0"]),
    (["!a"], ["r6", "r4", "r3", "r1"]),
    (["!a", "!b"], ["r6", "r3"]),
    (["nightly"], ["r3", "r1"]),
    (["db", "!d"], ["r3"]),
    (["r[13]"], ["r3", "r1"]),
    (["b@r4"], ["r4"]),
    (["*@r?"], ["r6", "r5", "r4", "r3", "r2", "r1", "r0"]),
    (["a@*", "!*@r0"], ["r5", "r2"]),
    (["[!a]"], ["r6", "r4", "r3", "r1"]),
    (["zzz*"], []),
])
def test_find_patterns(env, history, patterns, expected):
    assert q(env, matcher=patterns) == expected


def test_find_last_per_job(env, history):
    assert q(env, last_per_job=True) == ["r6", "r5", "r4", "r3"]
    assert q(env, last_per_job=True, active=False) == ["r4", "r3", "r2"]
    assert q(env, last_per_job=True, matcher="!a", limit=2) == ["r6", "r4"]
    assert q(env, last_per_job=True, ascending=True) == ["r3", "r4", "r5", "r6"]


def test_last_per_job_is_by_creation_time_not_insertion_order(env):
    # Two runs of a job created at t=1 and t=2 may reach the store in either order.
    insert(env, ended("j", "late", 2, Status.COMPLETED))
    insert(env, ended("j", "early", 1, Status.FAILED))
    assert q(env) == ["late", "early"]
    assert q(env, last_per_job=True) == ["late"]


def test_stats(env, history):
    rows = {s["job_id"]: s for s in env.stats(RunQuery())}
    assert sorted(rows) == ["a", "b", "c", "d"]
    assert (rows["a"]["runs"], rows["a"]["active"], rows["a"]["succeeded"]) == (3, 1, 1)
    assert rows["b"]["success_rate"] == 0.5 and rows["b"]["last_status"] == "COMPLETED"
    assert rows["d"]["success_rate"] is None and rows["d"]["p50_s"] is None
    assert rows["c"]["max_s"] == 1.0


# -- settings and transactions ---------------------------------------------------------------


def test_settings(env):
    with env.transaction() as tx:
        assert tx.get_setting("disabled", "x") is None
        tx.put_setting("disabled", "b*", {"by": "me", "n": 1})
        tx.put_setting("disabled", "a*", {"by": "you"})
        tx.put_setting("unlock", "b*", {"other": True})
    with env.transaction() as tx:
        assert tx.get_setting("disabled", "b*") == {"by": "me", "n": 1}
        assert list(tx.settings("disabled")) == ["a*", "b*"]
        assert tx.settings("unlock") == {"b*": {"other": True}}
        tx.put_setting("disabled", "b*", {"by": "again"})
        tx.put_setting("disabled", "a*", None)
        tx.put_setting("disabled", "never-there", None)
    with env.transaction() as tx:
        assert tx.settings("disabled") == {"b*": {"by": "again"}}
        assert tx.settings("none") == {}


def test_transaction_rolls_back_on_exception_and_publishes_nothing(env):
    insert(env, rec("keep", "r0"))
    with env.subscribe() as sub:
        with pytest.raises(RuntimeError), env.transaction() as tx:
            tx.insert(rec("job", "r1"))
            tx.update(rec("keep", "r0", 9, detail="changed"))
            tx.put_setting("disabled", "job", {"x": 1})
            tx.publish_after_commit(Event("created", rec("job", "r1")))
            raise RuntimeError("boom")
        assert sub.get(0.2) is None
    assert env.get_run("job@r1") is None
    assert env.get_run("keep@r0").detail is None
    with env.transaction() as tx:
        assert tx.get_setting("disabled", "job") is None


def test_events_of_a_transaction_are_published_after_commit(env):
    with env.subscribe() as sub:
        with env.transaction() as tx:
            tx.insert(rec("job", "r1"))
            tx.publish_after_commit(Event("created", rec("job", "r1")))
        ev = next_event(sub, lambda e: True)
    assert (ev.event, ev.run.instance_id) == ("created", "job@r1")


def test_transactions_are_exclusive_across_threads(env):
    insert(env, rec("counter", "c", extra={"n": 0}))

    def bump() -> None:
        for _ in range(20):
            with env.transaction() as tx:
                r = tx.get("counter@c")
                r.extra["n"] += 1
                tx.update(r)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert env.get_run("counter@c").extra["n"] == 80


# -- leases ----------------------------------------------------------------------------------


def test_active_runs_keeps_leased_and_reaps_released_as_lost(env):
    live, dead = rec("live", "r1"), rec("dead", "r2", 1)
    l1, l2 = env.lease(live), env.lease(dead)
    insert(env, live, dead)
    try:
        assert iids(env.active_runs()) == ["live@r1", "dead@r2"]  # oldest first
        assert iids(env.active_runs(RunMatcher.parse("dead"))) == ["dead@r2"]
        with env.subscribe() as sub:
            l2.release()  # no end record written: the process "vanished"
            assert iids(env.active_runs()) == ["live@r1"]
            ev = next_event(sub, lambda e: e.run.instance_id == "dead@r2")
        assert (ev.event, ev.run.status, ev.run.stage) == ("ended", Status.LOST, Stage.ENDED)
        got = env.get_run("dead@r2")
        assert (got.stage, got.status, got.outcome) == (Stage.ENDED, Status.LOST, "FAULT")
        assert got.ended_at is not None
        with env.transaction() as tx:
            assert iids(tx.active_runs()) == ["live@r1"]
    finally:
        l1.release()
        l2.release()
    assert env.active_runs() == []
    assert env.get_run("live@r1").status is Status.LOST


def test_active_run_without_any_lease_is_lost(env):
    insert(env, rec("nolease", "r1"))
    with env.transaction() as tx:
        assert tx.active_runs() == []
    assert env.get_run("nolease@r1").status is Status.LOST


def test_ended_runs_are_left_alone(env):
    insert(env, ended("done", "r1", 0, Status.COMPLETED))
    assert env.active_runs() == []
    assert env.get_run("done@r1").status is Status.COMPLETED


def test_wait_lease(env):
    r = rec("job", "r1")
    lease = env.lease(r)
    assert env.wait_lease(r, 0.05) is False
    threading.Timer(0.1, lease.release).start()
    assert env.wait_lease(r, 5) is True
    assert env.wait_lease(rec("never", "leased"), 1) is True


def test_lease_release_is_idempotent(env):
    lease = env.lease(rec("job", "r1"))
    lease.release()
    lease.release()


# -- events ----------------------------------------------------------------------------------


def test_publish_reaches_every_subscriber_with_the_run(env):
    r = rec("job", "r1", tags=["t"], stage=Stage.RUNNING, state=State.EXECUTING)
    with env.subscribe() as s1, env.subscribe() as s2:
        env.publish(Event("executing", r, T0 + 5, {"k": "v"}))
        for s in (s1, s2):
            ev = next_event(s, lambda e: True)
            assert (ev.event, ev.timestamp, ev.detail) == ("executing", T0 + 5, {"k": "v"})
            assert ev.run.to_dict() == r.to_dict()


def test_subscription_get_times_out_and_wakes(env):
    with env.subscribe() as sub:
        t = time.monotonic()
        assert sub.get(0.1) is None
        assert time.monotonic() - t >= 0.09
        threading.Timer(0.05, sub.wake).start()
        t = time.monotonic()
        assert sub.get(10) is None
        assert time.monotonic() - t < 5
        sub.wake()  # a wake before get makes the next get return at once
        assert sub.get(10) is None


def test_closed_subscription_gets_nothing(env):
    sub = env.subscribe()
    sub.close()
    env.publish(Event("created", rec("job", "r1")))
    assert sub.get(0.05) is None
    sub.close()


def test_events_keep_order(env):
    with env.subscribe() as sub:
        for i in range(50):
            env.publish(Event("progress", rec("job", f"r{i}")))
        got = [sub.get(5).run.run_id for _ in range(50)]
    assert got == [f"r{i}" for i in range(50)]


# -- control and live output -----------------------------------------------------------------


def test_control_round_trip(env):
    r = rec("job", "r1")
    seen = []

    def handler(req):
        seen.append(req)
        return {"ok": True, "echo": req["op"]}

    ep = env.serve_control(r, handler)
    try:
        assert env.control("job@r1", {"op": "ping", "by": "me"}) == {"ok": True, "echo": "ping"}
        assert seen == [{"op": "ping", "by": "me"}]
    finally:
        ep.close()
    with pytest.raises(NotFoundError):
        env.control("job@r1", {"op": "ping"})
    with pytest.raises(NotFoundError):
        env.control("other@r9", {"op": "ping"})


def test_control_handler_error_is_answered(env):
    def handler(req):
        raise ValueError("nope")

    ep = env.serve_control(rec("job", "r1"), handler)
    try:
        try:
            resp = env.control("job@r1", {"op": "x"})
        except ValueError:
            resp = {"ok": False}  # in-process backends may raise the handler's error directly
        assert resp.get("ok") is False
    finally:
        ep.close()


def test_closed_control_endpoints_leave_no_thread_behind(env):
    """A program that runs many jobs in-process must not gain a thread (or its stack) per run."""
    def os_threads() -> int:
        return len(os.listdir("/proc/self/task"))

    ep = env.serve_control(rec("job", "warm"), lambda req: {"ok": True})
    ep.close()
    before = os_threads()
    for i in range(50):
        ep = env.serve_control(rec("job", f"r{i}"), lambda req: {"ok": True})
        env.control(f"job@r{i}", {"op": "ping"})
        ep.close()
    # other tests' daemon threads may come and go meanwhile; a leak is one thread per endpoint
    deadline = time.monotonic() + 5
    while os_threads() > before + 10 and time.monotonic() < deadline:
        time.sleep(0.01)  # a handler thread finishing its reply
    assert os_threads() <= before + 10, "a closed control endpoint left its threads running"


def test_follow_output_offsets_then_chunks(env):
    r = rec("job", "r1")
    ep = env.serve_control(r, lambda req: {"ok": True})
    try:
        ep.output("stdout", b"before\n")
        ep.output("stderr", b"e")
        it = env.follow_output("job@r1")
        kind, offsets = next(it)
        assert (kind, offsets["stdout"], offsets["stderr"]) == ("offsets", 7, 1)
        ep.output("stdout", b"\x00binary\xff")
        ep.output("stderr", b"err\n")
        assert next(it) == ("stdout", b"\x00binary\xff")
        assert next(it) == ("stderr", b"err\n")
    finally:
        ep.close()
    assert list(it) == []  # the stream ends with the run


def test_follow_output_of_unknown_run(env):
    with pytest.raises(NotFoundError):
        next(iter(env.follow_output("ghost@r1")))


def test_output_paths_are_distinct_per_run_and_exist_once_it_is_inserted(env):
    r1, r2 = rec("job", "r1"), rec("job", "r2")
    a = env.output_paths(r1)
    b = env.output_paths(r2)
    assert len(set(a) | set(b)) == 4
    r1.stdout_path, r1.stderr_path = a
    with env.transaction() as tx:
        tx.insert(r1)
    for p in a:
        assert os.path.isdir(os.path.dirname(p))


# -- local only ------------------------------------------------------------------------------

HOLDER = """
import sys
from runtools.env.local import LocalEnvironment
from runtools.model.run import RunRecord
env = LocalEnvironment(sys.argv[1])
r = RunRecord(job_id="held", run_id="r1", created_at=1.0)
lease = env.lease(r)
with env.transaction() as tx:
    tx.insert(r)
print("ready", flush=True)
sys.stdin.read()
"""


def test_local_lease_of_a_killed_process_is_released(tmp_path):
    from runtools.env.local import LocalEnvironment

    d = tmp_path / "shared"
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(d)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"ready\n"
        with LocalEnvironment(str(d)) as env:
            r = env.get_run("held@r1")
            assert iids(env.active_runs()) == ["held@r1"]
            assert env.wait_lease(r, 0.05) is False
            with env.subscribe() as sub:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(5)
                assert env.wait_lease(r, 5) is True
                assert env.active_runs() == []
                ev = next_event(sub, lambda e: e.run.instance_id == "held@r1")
            assert (ev.event, ev.run.status) == ("ended", Status.LOST)
            assert env.get_run("held@r1").status is Status.LOST
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdin.close()
        p.stdout.close()


def test_local_environments_in_two_processes_share_events_and_control(tmp_path):
    """A second LocalEnvironment on the same directory sees runs, events and control."""
    from runtools.env.local import LocalEnvironment

    d = str(tmp_path / "two")
    with LocalEnvironment(d) as a, LocalEnvironment(d) as b:
        r = rec("job", "r1")
        lease = a.lease(r)
        insert(a, r)
        ep = a.serve_control(r, lambda req: {"ok": True, "from": "a"})
        try:
            assert iids(b.active_runs()) == ["job@r1"]
            assert b.control("job@r1", {"op": "get"}) == {"ok": True, "from": "a"}
            with b.subscribe() as sub:
                a.publish(Event("ended", r))
                assert next_event(sub, lambda e: True).run.instance_id == "job@r1"
        finally:
            ep.close()
            lease.release()
