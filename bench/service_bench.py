"""Shared services (docs/services.md): admissions with 20 competing processes vs the limit,
runcue shared vs unshared, and the overhead of `run job --service` on an idle service.

Run: .venv/bin/python bench/service_bench.py [--env local|postgresql://...] [--limit 20] [--seconds 8]
     [--items 10000] [--repeat 5] [--runs 20]

Everything runs in a throwaway $RUNTOOLS_HOME; all figures come from one run of this script.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BIN = os.path.dirname(sys.executable)


def sh(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(BIN, argv[0]), *argv[1:]], env=env, check=True, capture_output=True,
                          stdin=subprocess.DEVNULL, text=True)


def records(job: str, env_name: str) -> list:
    from runtools.env import open_environment
    from runtools.env.base import RunQuery
    from runtools.model.criteria import RunMatcher

    with open_environment(env_name) as env:
        return env.find_runs(RunQuery(matcher=RunMatcher.parse(job), ascending=True))


def competing(env: dict[str, str], env_name: str, limit: int, seconds: float, procs: int = 20) -> dict[str, float]:
    """`procs` processes start `run job --service hammer -- true` back to back for `seconds`."""
    sh("taro", "service", "set", "hammer", "--rate", f"{limit}/s", env=env)
    run = os.path.join(BIN, "run")
    deadline = time.time() + seconds
    loop = f"while [ $(date +%s) -lt {int(deadline)} ]; do {run} job --id hammer --service hammer -- true; done"
    ps = [subprocess.Popen(["sh", "-c", loop], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
          for _ in range(procs)]
    for p in ps:
        p.wait()
    runs = records("hammer", env_name)
    at = sorted(r.coord["service_at"] for r in runs if r.coord.get("service_at"))
    worst = max(sum(1 for s in at[i:] if s < t + 1.0) for i, t in enumerate(at))
    # whole windows from the first admission while runs kept coming: at most k x limit fit in k windows
    k = max(1, int(deadline - 0.5 - at[0]))
    inside = sum(1 for t in at if t < at[0] + k)
    offered = sum(1 for r in runs if r.created_at < at[0] + k) / k  # runs begun per second (the supply)
    return {"admitted": len(at), "max_in_any_1s": worst, "limit": limit, "windows": k,
            "steady_per_s": inside / k, "ratio": inside / k / limit, "offered_per_s": offered}


async def cue_items(env_name: str | None, items: int, concurrent: int, rate: int) -> float:
    import runcue

    cue = runcue.Cue(env=env_name) if env_name else runcue.Cue()
    if env_name:
        cue.service("cuebench", shared=True)
    else:
        cue.service("cuebench", rate=f"{rate}/s", concurrent=concurrent)
    done = asyncio.Event()
    n = 0

    @cue.task("noop", uses="cuebench")
    async def noop(work: runcue.WorkUnit) -> None:
        return None

    @cue.on_complete
    def count(work: runcue.WorkUnit, result: object, duration: float) -> None:
        nonlocal n
        n += 1
        if n == items:
            done.set()

    cue.start()
    t0 = time.perf_counter()
    for _ in range(items):
        await cue.submit("noop")
    await done.wait()
    elapsed = time.perf_counter() - t0
    await cue.stop(timeout=0)
    return elapsed


def overhead(env: dict[str, str], runs: int) -> dict[str, float]:
    sh("taro", "service", "set", "idle", "--rate", "100000/s", "--concurrent", "1000", env=env)
    plain, svc = [], []
    for _ in range(runs):  # interleaved
        for argv, out in ((["run", "job", "--id", "p", "--", "true"], plain),
                          (["run", "job", "--id", "s", "--service", "idle", "--", "true"], svc)):
            t0 = time.perf_counter()
            sh(*argv, env=env)
            out.append(time.perf_counter() - t0)
    p, s = statistics.median(plain), statistics.median(svc)
    return {"plain_ms": p * 1000, "service_ms": s * 1000, "overhead_ms": (s - p) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="local")
    parser.add_argument("--limit", type=int, default=20, help="rate limit per second with 20 processes")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="svcbench-")
    os.environ["RUNTOOLS_HOME"] = home
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="svcbench-rt-"))
    os.environ["RUNTOOLS_ENV"] = args.env
    env = dict(os.environ)
    try:
        c = competing(env, args.env, args.limit, args.seconds)
        print(f"20 processes, rate {c['limit']}/s for {args.seconds:g}s: {c['admitted']:.0f} admitted, "
              f"most in any 1 s window {c['max_in_any_1s']:.0f} (limit {c['limit']}), "
              f"in the first {c['windows']:.0f} whole windows {c['steady_per_s']:.2f}/s = {c['ratio']:.1%} of the "
              f"limit (runs begun: {c['offered_per_s']:.1f}/s)")
        concurrent, rate = 100, 1_000_000
        sh("taro", "service", "set", "cuebench", "--rate", f"{rate}/s", "--concurrent", str(concurrent), env=env)
        unshared, shared = [], []
        for _ in range(args.repeat):
            unshared.append(asyncio.run(cue_items(None, args.items, concurrent, rate)))
            shared.append(asyncio.run(cue_items(args.env, args.items, concurrent, rate)))
        u, s = statistics.median(unshared), statistics.median(shared)
        print(f"runcue {args.items} no-op units, rate {rate}/s, concurrent {concurrent}, median of {args.repeat}: "
              f"unshared {u * 1000:.0f} ms, shared {s * 1000:.0f} ms ({s / u:.2f}x)")
        o = overhead(env, args.runs)
        print(f"run job -- true, median of {args.runs}: {o['plain_ms']:.1f} ms; with --service on an idle "
              f"service {o['service_ms']:.1f} ms (overhead {o['overhead_ms']:+.1f} ms)")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
