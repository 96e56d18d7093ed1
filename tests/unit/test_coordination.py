"""Coordination phases in one process, on the memory environment (same code as on `local`)."""

from __future__ import annotations

import threading

import pytest

from runtools.env.memory import MemoryEnvironment
from runtools.job.coordination import DISABLED, ordinal
from runtools.job.exclusion import _View
from runtools.job.function import FunctionPhase
from runtools.job.spec import JobSpec, build_run
from runtools.model.status import State, Status


def start(env, spec: JobSpec, fn=lambda: None):
    """Run `spec` with `fn` as its work in a thread; returns (thread, results list)."""
    job = build_run(env, spec, execution=FunctionPhase(fn))
    out: list = []
    t = threading.Thread(target=lambda: out.append(job.run()), daemon=True)
    t.start()
    return job, t, out


def wait_state(env, job, state, timeout=10.0):
    with env.subscribe() as sub:
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.start()
        try:
            while not deadline.is_set():
                r = env.get_run(job.record.instance_id)
                if r is not None and r.active and r.state is state:
                    return r
                sub.get(0.05)
        finally:
            timer.cancel()
    pytest.fail(f"{job.record.instance_id} never reached {state}")


def test_ordinal():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th"]


def test_view_counts_departures_of_runs_ahead_only():
    v = _View({"a", "b"}, {"h"}, needed=2)
    assert not v.apply("x", True, False)  # not ahead of us
    assert not v.apply("a", False, True)  # a took a slot: still one ahead
    assert not v.apply("h", True, False)  # one departure of two needed
    assert v.apply("b", True, False)  # second departure, and nobody ahead any more


def test_serial_queue_fifo_in_memory():
    env = MemoryEnvironment()
    gate = threading.Event()
    order: list[str] = []
    holder, th, _ = start(env, JobSpec(job_id="q", max_concurrent=1), lambda: (order.append("h"), gate.wait(10)))
    wait_state(env, holder, State.EXECUTING)
    queued = []
    for i in range(3):
        job, t, out = start(env, JobSpec(job_id="q", max_concurrent=1, tags=[f"n{i}"]),
                            lambda i=i: order.append(f"n{i}"))
        r = wait_state(env, job, State.QUEUED)
        assert r.detail == f"QUEUED {ordinal(i + 1)} of {i + 1} in group q"
        queued.append((t, out))
    gate.set()
    th.join(10)
    for t, out in queued:
        t.join(10)
        assert out[0].run.status is Status.COMPLETED
    assert order == ["h", "n0", "n1", "n2"]


def test_mutex_and_gate_and_disabled_in_memory():
    env = MemoryEnvironment()
    gate = threading.Event()
    holder, th, _ = start(env, JobSpec(job_id="m", mutual_exclusion=True), lambda: gate.wait(10))
    wait_state(env, holder, State.EXECUTING)
    _, t2, out2 = start(env, JobSpec(job_id="m", mutual_exclusion=True))
    t2.join(10)
    assert out2[0].run.status is Status.OVERLAP and out2[0].exit_code == 100
    gate.set()
    th.join(10)

    pending, t3, out3 = start(env, JobSpec(job_id="p", pending="L"))
    wait_state(env, pending, State.PENDING)
    resp = env.control(pending.record.instance_id, {"op": "release", "latch": "L", "by": "unit"})
    assert resp["ok"] and resp["action"] == "released"
    t3.join(10)
    assert out3[0].run.status is Status.COMPLETED
    assert out3[0].run.actions[0]["by"] == "unit"

    with env.transaction() as tx:
        tx.put_setting(DISABLED, "d*", {"by": "unit", "at": 0})
    _, t4, out4 = start(env, JobSpec(job_id="daily"))
    t4.join(10)
    assert out4[0].run.status is Status.DISABLED and out4[0].exit_code == 101
