"""Run keys in the core: `run job --run-key KEY [--strict]`, `taro unlock`, and the claim itself."""

from __future__ import annotations

import json

import pytest

from runtools.env.memory import MemoryEnvironment
from runtools.errors import NotFoundError, StateError
from runtools.job.runkey import RunKeyClaim, unlock
from runtools.model.run import RunRecord
from runtools.model.status import Stage, Status


def test_second_foreground_run_attaches_and_exits_with_the_first_runs_code(cli, wait_until) -> None:
    first = cli.spawn_gated("keyed", "--run-key", "K", after="exit 7")
    cli.wait_state("keyed")
    second = cli.spawn_run("--id", "other", "--run-key", "K", "--", "sh", "-c", "echo never; exit 0")
    wait_until(lambda: cli.listeners() > 0, what="the second run to attach")
    cli.release(first)
    assert first.wait(20) == 7
    assert second.wait(20) == 7
    out = second.stdout.read()
    assert b"never" not in out
    runs = cli.history()
    assert [r["job_id"] for r in runs] == ["keyed"]


def test_detach_prints_the_existing_run(cli) -> None:
    first = cli.spawn_gated("keyed", "--run-key", "K")
    r = cli.wait_state("keyed")
    p = cli.run("--run-key", "K", "--detach", "--", "true")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert (doc["existing"], doc["instance_id"]) == (True, r["instance_id"])
    cli.release(first)
    assert first.wait(20) == 0


def test_attempts_rerun_of_and_strict(cli) -> None:
    assert cli.run("--id", "a", "--run-key", "S", "--strict", "--", "true").returncode == 0
    # strict and finished: not run again; DUPLICATE (105), whatever the finished run exited with
    p = cli.run("--id", "a", "--run-key", "S", "--strict", "--", "sh", "-c", "echo again; exit 3")
    assert p.returncode == 105 and "again" not in p.stdout
    assert len(cli.history()) == 1
    p = cli.taro("unlock", "S", "--ttl", "10m", "--reason", "fix")
    assert p.returncode == 0 and "unlocked S" in p.stdout
    p = cli.run("--id", "a", "--run-key", "S", "--strict", "--", "sh", "-c", "exit 3")
    assert p.returncode == 3
    runs = cli.history()
    assert [(r["attempt_no"], r["exit_code"]) for r in runs] == [(2, 3), (1, 0)]
    assert runs[0]["rerun_of"] == runs[1]["instance_id"]
    # not strict: a finished key runs again
    assert cli.run("--id", "a", "--run-key", "S", "--", "true").returncode == 0
    assert cli.history()[0]["attempt_no"] == 3


def test_taro_unlock_errors_and_json(cli) -> None:
    p = cli.taro("unlock", "nokey")
    assert p.returncode == 3 and p.stderr.startswith("taro: ") and p.stderr.count("\n") == 1
    assert cli.run("--run-key", "J", "--", "true").returncode == 0
    doc = cli.json("unlock", "J", "--reason", "why")
    assert (doc["unlocked"], doc["run_key"], doc["reason"], doc["expires_at"]) == (True, "J", "why", None)
    p = cli.taro("unlock", "J", "--ttl", "soon")
    assert p.returncode == 2


# -- the claim, in one process ------------------------------------------------------------------


def _rec(n: int, key: str = "k") -> RunRecord:
    return RunRecord(job_id="j", run_id=f"r{n}", created_at=float(n), run_key=key)


def _admit_and_insert(env: MemoryEnvironment, rec: RunRecord, strict: bool = False):
    env.lease(rec)
    with env.transaction() as tx:
        decision = RunKeyClaim(rec.run_key, strict=strict).admit(tx, rec)
        if decision is None:
            tx.insert(rec)
    return decision


def _end(env: MemoryEnvironment, rec: RunRecord) -> None:
    rec.stage, rec.status, rec.ended_at = Stage.ENDED, Status.COMPLETED, rec.created_at + 1
    with env.transaction() as tx:
        tx.update(rec)


def test_claim_hands_back_the_active_run_and_numbers_attempts() -> None:
    env = MemoryEnvironment()
    a = _rec(1)
    assert _admit_and_insert(env, a) is None and a.attempt_no == 1
    got = _admit_and_insert(env, _rec(2))
    assert got.existing.instance_id == a.instance_id
    _end(env, a)
    b = _rec(3)
    assert _admit_and_insert(env, b) is None
    assert (b.attempt_no, b.rerun_of) == (2, a.instance_id)


def test_claim_strict_and_unlock() -> None:
    env = MemoryEnvironment()
    a = _rec(1)
    _admit_and_insert(env, a, strict=True)
    with env.transaction() as tx, pytest.raises(StateError):
        unlock(tx, "k")
    _end(env, a)
    assert _admit_and_insert(env, _rec(2), strict=True).existing.instance_id == a.instance_id
    with env.transaction() as tx, pytest.raises(NotFoundError):
        unlock(tx, "other")
    with env.transaction() as tx:
        o = unlock(tx, "k", ttl=60, reason="r")
    assert o["expires_at"] == pytest.approx(o["allowed_at"] + 60)
    b = _rec(3)
    assert _admit_and_insert(env, b, strict=True) is None
    assert (b.attempt_no, b.extra["strict_override_used"], b.extra["rerun_reason"]) == (2, True, "r")
    _end(env, b)
    assert _admit_and_insert(env, _rec(4), strict=True).existing.instance_id == b.instance_id  # consumed


def test_expired_unlock_is_ignored() -> None:
    env = MemoryEnvironment()
    a = _rec(1)
    _admit_and_insert(env, a, strict=True)
    _end(env, a)
    with env.transaction() as tx:
        unlock(tx, "k", ttl=0)
    assert _admit_and_insert(env, _rec(2), strict=True).existing is not None


def test_dead_run_frees_its_key() -> None:
    env = MemoryEnvironment()
    a = _rec(1)
    _admit_and_insert(env, a)
    env._leases[a.instance_id].release()  # its process died
    b = _rec(2)
    assert _admit_and_insert(env, b) is None and b.attempt_no == 2
    with env.transaction() as tx:
        assert tx.get(a.instance_id).status is Status.LOST

