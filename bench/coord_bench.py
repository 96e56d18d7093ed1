"""Coordination benchmarks (issue 3), on a fresh local environment in a temp dir.

1. Queue handoff latency: one `--serial` holder, K runs queued behind it, then the holder ends;
   each handoff is `started_at` of a run minus `ended_at` of the run before it, from the store.
2. W wrappers started at once on one queue group with `--max-concurrent 4`, each sleeping S:
   wall time against the ideal W*S/4, and the most runs executing at one instant, computed
   from the stored start/end times (must be <= 4).

    .venv/bin/python bench/coord_bench.py [--handoffs 50] [--wrappers 200] [--work 0.25]
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

from installed import compile_runtools, installed_env

BIN = Path(sys.executable).parent


def env_vars(home: str, runtime: str) -> dict[str, str]:
    env = dict(os.environ, RUNTOOLS_HOME=home, XDG_RUNTIME_DIR=runtime)
    env.pop("RUNTOOLS_ENV", None)
    return env


def stored(job: str):
    from runtools.env import open_environment
    from runtools.env.base import RunQuery
    from runtools.model.criteria import RunMatcher

    with open_environment("local") as env:
        env.active_runs()
        return env.find_runs(RunQuery(matcher=RunMatcher.parse(job), ascending=True))


def active(job: str):
    from runtools.env import open_environment
    from runtools.env.base import RunQuery
    from runtools.model.criteria import RunMatcher

    with open_environment("local") as env:
        return env.find_runs(RunQuery(matcher=RunMatcher.parse(job), active=True))


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)  # a deadline loop of the harness, not part of what is measured


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def max_overlap(runs) -> int:
    points = sorted([(r.started_at, 1) for r in runs] + [(r.ended_at, -1) for r in runs], key=lambda x: (x[0], x[1]))
    level = peak = 0
    for _, d in points:
        level += d
        peak = max(peak, level)
    return peak


def handoff(env: dict[str, str], k: int) -> dict[str, float]:
    run = str(BIN / "run")
    holder = subprocess.Popen([run, "job", "--id", "handoff", "--serial", "--", "sh", "-c", "read _"],
                              stdin=subprocess.PIPE, env=env)
    wait_for(lambda: any(str(r.state) == "EXECUTING" for r in active("handoff")), 30, "the holder")
    procs = [subprocess.Popen([run, "job", "--id", "handoff", "--serial", "--", "true"], env=env,
                              stdout=subprocess.DEVNULL) for _ in range(k)]
    wait_for(lambda: sum(str(r.state) == "QUEUED" for r in active("handoff")) == k, 60, "all queued")
    holder.stdin.close()
    for p in [holder, *procs]:
        p.wait()
    runs = sorted(stored("handoff"), key=lambda r: r.started_at)
    gaps = [(b.started_at - a.ended_at) * 1000 for a, b in itertools.pairwise(runs)]
    return {"n": len(gaps), "p50_ms": statistics.median(gaps), "p95_ms": pct(gaps, 95), "max_ms": max(gaps)}


def crowd(env: dict[str, str], n: int, work: float, limit: int = 4) -> dict[str, float]:
    run = str(BIN / "run")
    t0 = time.monotonic()
    procs = [subprocess.Popen([run, "job", "--id", "crowd", "--max-concurrent", str(limit), "--", "sleep", str(work)],
                              env=env, stdout=subprocess.DEVNULL) for _ in range(n)]
    codes = [p.wait() for p in procs]
    wall = time.monotonic() - t0
    runs = stored("crowd")
    assert codes == [0] * n, codes
    assert all(str(r.status) == "COMPLETED" for r in runs)
    ideal = n * work / limit
    first_start = min(r.started_at for r in runs)
    last_end = max(r.ended_at for r in runs)
    return {
        "wrappers": n, "work_s": work, "ideal_s": ideal, "wall_s": wall, "wall_over_ideal": wall / ideal,
        "exec_span_s": last_end - first_start, "span_over_ideal": (last_end - first_start) / ideal,
        "max_overlap": max_overlap(runs),
    }


def floor(env: dict[str, str], n: int = 20) -> dict[str, float]:
    """Per-process floors on this machine: bare fork/exec of `true`, and `run job -- true`."""
    def each(argv):
        t = time.perf_counter()
        for _ in range(n):
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        return (time.perf_counter() - t) / n * 1000

    return {"true_ms": each(["true"]), "python_ms": each([sys.executable, "-c", "pass"]),
            "run_job_ms": each([str(BIN / "run"), "job", "--id", "floor", "--", "true"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--handoffs", type=int, default=50)
    ap.add_argument("--wrappers", type=int, default=200)
    ap.add_argument("--work", type=float, default=0.25)
    a = ap.parse_args()
    home = tempfile.mkdtemp(prefix="coord-bench-")
    runtime = tempfile.mkdtemp(prefix="cb-", dir="/tmp")
    env = installed_env(env_vars(home, runtime))
    os.environ.update(RUNTOOLS_HOME=home, XDG_RUNTIME_DIR=runtime)
    compile_runtools()
    try:
        print(f"cpus: {os.cpu_count()}  python: {sys.version.split()[0]}")
        f = floor(env)
        print(f"floor: fork/exec true {f['true_ms']:.1f} ms, python -c pass {f['python_ms']:.1f} ms, "
              f"run job -- true {f['run_job_ms']:.1f} ms")
        h = handoff(env, a.handoffs)
        print(f"queue handoff (--serial, {h['n']} handoffs): p50 {h['p50_ms']:.1f} ms, p95 {h['p95_ms']:.1f} ms, "
              f"max {h['max_ms']:.1f} ms")
        c = crowd(env, a.wrappers, a.work)
        print(f"{c['wrappers']} wrappers at once, --max-concurrent 4, work {c['work_s']}s each: "
              f"wall {c['wall_s']:.2f}s vs ideal {c['ideal_s']:.2f}s ({c['wall_over_ideal']:.2f}x); "
              f"first start to last end {c['exec_span_s']:.2f}s ({c['span_over_ideal']:.2f}x); "
              f"max executing at once (stored times): {c['max_overlap']}")
        assert c["max_overlap"] <= 4
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(runtime, ignore_errors=True)


if __name__ == "__main__":
    main()
