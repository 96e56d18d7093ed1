"""Soak: many runs through mutexes, queues and run keys leave nothing behind.

10,000 runs in one process (four threads, each with its own environment handle, as four
embedding programs would) and 200 `run job` wrappers at once through a queue, a mutex and a
shared run key. Afterwards: every run is recorded and ended with the status its path implies (nothing
lost, nothing run twice), and the process's descriptors, threads and memory, the environment's
leases and sockets, and the temporary directory are where they were before.
"""

from __future__ import annotations

import gc
import os
import subprocess
import threading
from pathlib import Path

import pytest

import runtools
from runtools.env.base import RunQuery
from runtools.model.status import Status

BIN = Path(__import__("sys").executable).parent

THREADS = 4
RUNS_PER_THREAD = 2500
STRICT_KEYS = 50  # per thread; each one executes once, every later use is DUPLICATE


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.exists() else set()


def _files(path: Path) -> set[str]:
    """What is in `path` apart from directories (sockets, lock and temporary files)."""
    return {str(p.relative_to(path)) for p in path.rglob("*") if not p.is_dir()} if path.exists() else set()


def _one_run(env, t: int, i: int) -> tuple[str, Status, bool, int]:
    """The i-th run of thread t: a mix of every kind of coordination, commands and callables."""
    kind = i % 5
    if kind == 0:
        r = runtools.run(int, job_id=f"mutex-{t}", env=env, mutual_exclusion=True)
    elif kind == 1:
        r = runtools.run(int, job_id="queued", env=env, max_concurrent=2, queue_group="soak")
    elif kind == 2:
        r = runtools.run(int, job_id="keyed", env=env, run_key=f"k-{t}-{i}")
    elif kind == 3:
        r = runtools.run(int, job_id="strict", env=env, run_key=f"s-{t}-{(i // 5) % STRICT_KEYS}", strict=True)
    elif i % 25 == 4:
        r = runtools.run(["true"], job_id="program", env=env)
    else:
        r = runtools.run(int, job_id="plain", env=env, tags=["soak"])
    return r.run.instance_id, r.run.status, r.existing, r.exit_code


@pytest.mark.slow
def test_ten_thousand_runs_in_process_leave_nothing_behind(home: Path, tmp_path: Path, monkeypatch):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])

    fds_before = _fds()
    envs = [runtools.environment() for _ in range(THREADS)]
    for t, env in enumerate(envs):  # warm up: lazy imports, caches, the database file
        for i in range(5 * 4):
            _one_run(env, 100 + t, i)  # ids and keys of its own
    gc.collect()
    fds0, threads0, rss0 = _fds(), threading.active_count(), _rss_kib()
    tmp0, runtime0 = _tree(tmp), _tree(runtime)

    results: list[list[tuple[str, Status, bool, int]]] = [[] for _ in range(THREADS)]
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(RUNS_PER_THREAD):
                results[t].append(_one_run(envs[t], t, i))
        except BaseException as e:  # surfaced below, with the run it happened in
            errors.append(e)

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=600)
    assert not errors, errors[0]

    # every run was recorded, once, with the status its path implies; a strict key's later
    # callers are handed its first run back (existing, exit 105) and record nothing new
    ids = [iid for rs in results for iid, _, existing, _ in rs if not existing]
    assert len(ids) == THREADS * (RUNS_PER_THREAD - (RUNS_PER_THREAD // 5 - STRICT_KEYS)) == len(set(ids))
    env = envs[0]
    stored = {r.instance_id: r for r in env.find_runs(RunQuery())}
    for iid in ids:
        assert iid in stored, f"{iid} was never recorded"
    assert not env.active_runs(), "a run was left active"
    assert not [r for r in stored.values() if r.status is Status.LOST]
    for rs in results:
        by_kind: dict[int, list[Status]] = {}
        for i, (_, status, existing, code) in enumerate(rs):
            by_kind.setdefault(i % 5, []).append(status)
            assert existing == (i % 5 == 3 and i // 5 >= STRICT_KEYS)
            assert code == (105 if existing else 0)
        # a thread's own mutex runs are sequential: none of them can overlap another of its own, and
        # each thread's mutex has its own job id, so every one executed
        assert set(by_kind[0]) == {Status.COMPLETED}
        assert set(by_kind[1]) == {Status.COMPLETED}
        assert set(by_kind[2]) == {Status.COMPLETED}
        strict = by_kind[3]
        assert strict[:STRICT_KEYS] == [Status.COMPLETED] * STRICT_KEYS, "a strict key's first run must execute"
        first = {(i // 5) % STRICT_KEYS: rs[i][0] for i in range(3, 5 * STRICT_KEYS, 5)}
        for i in range(5 * STRICT_KEYS + 3, RUNS_PER_THREAD, 5):
            assert rs[i][0] == first[(i // 5) % STRICT_KEYS], "a strict key ran twice"
        assert set(by_kind[4]) == {Status.COMPLETED}

    # nothing left behind: descriptors, threads, memory, sockets, leases, temporary files
    gc.collect()
    # a handle keeps one publisher socket once it has met a listener (see env/local/events.py)
    assert _fds() <= fds0 + THREADS, "file descriptors leaked"
    assert threading.active_count() == threads0, "threads leaked"
    grown_mib = (_rss_kib() - rss0) / 1024
    assert grown_mib < 32, f"memory grew by {grown_mib:.1f} MiB over 10,000 runs"
    assert _tree(tmp) == tmp0, "temporary files left behind"
    assert _tree(runtime) == runtime0, "sockets left behind in the runtime directory"
    leases = home / "local" / "leases"
    assert not leases.exists() or not list(leases.iterdir()), "lease files left behind"
    for e in envs:
        e.close()
    assert _fds() == fds_before, "closing the environments must release all their descriptors"


@pytest.mark.slow
def test_hundreds_of_wrappers_at_once_leave_nothing_behind(cli, home: Path, tmp_path: Path):
    """200 `run job` processes at once: through a queue of 3, racing for one mutex, sharing run keys."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    runtime0 = _files(runtime)
    env = {**os.environ, "TMPDIR": str(tmp)}
    kinds = {
        "queue": ["--id", "q", "--max-concurrent", "3"],
        "mutex": ["--id", "x", "-x", "--excl-group", "soak"],
        "key": ["--id", "k", "--run-key", "shared"],  # one executes; the others attach to it or run after it
    }
    procs = []
    for i in range(200):
        kind = ("queue", "mutex", "key", "queue", "mutex")[i % 5]
        p = subprocess.Popen([str(BIN / "run"), "job", *kinds[kind], "--", "true"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append((kind, p))
    outcomes = [(kind, p.wait(timeout=300), p.stderr.read().decode()) for kind, p in procs]  # type: ignore[union-attr]
    for _, p in procs:
        p.stderr.close()  # type: ignore[union-attr]
    failures = [(k, code, err) for k, code, err in outcomes if code != 0 and not (k == "mutex" and code == 100)]
    assert not failures, failures[:3]

    with runtools.environment() as e:
        runs = e.find_runs(RunQuery())
        assert not e.active_runs()
        by_job: dict[str, list[Status]] = {}
        for r in runs:
            by_job.setdefault(r.job_id, []).append(r.status)
        assert by_job["q"] == [Status.COMPLETED] * 80, "every queued wrapper recorded one run that executed"
        raced = sorted("COMPLETED" if code == 0 else "OVERLAP" for kind, code, _ in outcomes if kind == "mutex")
        assert sorted(s.name for s in by_job["x"]) == raced, "stored statuses match what the wrappers returned"
        assert set(by_job["k"]) == {Status.COMPLETED} and 1 <= len(by_job["k"]) <= 40
    assert _tree(tmp) == set(), "temporary files left behind"
    assert _files(runtime) == runtime0, "sockets left behind in the runtime directory"
    leases = home / "local" / "leases"
    assert not leases.exists() or not list(leases.iterdir()), "lease files left behind"
