"""What the postgres fence costs (docs/postgres.md, "Timings"): the guardian of an executing run,
and the takeover after a crash, which now waits out the fence (RUNTOOLS_PG_FENCE, 0.7 s).

    .venv/bin/python bench/pg_fence_bench.py [--repeat N]

Starts its own throwaway server (tests/pg/server.py) and a private $RUNTOOLS_HOME.
- guardian: in one process, a lease taken, a `sleep 0.05` spawned as its group leader, then
  `lease.executing(pid)` (forks the guardian) and, once the command ended, `lease.release()`
  (SIGKILLs it, reaped aside); against `release()` of a lease whose command never started (no
  guardian). Medians of N.
- crash takeover: a holder executing, a run queued behind it (another RUNTOOLS_HOST); the
  holder's wrapper and command SIGKILLed; the queued run's `started_at` minus the kill. Medians.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
RUN = os.path.join(os.path.dirname(sys.executable), "run")
TARO = os.path.join(os.path.dirname(sys.executable), "taro")


def guardian(url: str, repeat: int) -> tuple[float, float, float]:
    from runtools.env.postgres import PostgresEnvironment
    from runtools.env.postgres.environment import PgLease

    env = PostgresEnvironment(url)
    with env.transaction():
        pass
    forked, released, plain = [], [], []
    for i in range(repeat):
        lease = PgLease(env, f"bench@g{i}")
        pid = os.posix_spawnp("sleep", ["sleep", "0.05"], os.environ, setpgroup=0)
        t0 = time.perf_counter()
        lease.executing(pid)
        forked.append(time.perf_counter() - t0)
        os.waitpid(pid, 0)
        t0 = time.perf_counter()
        lease.release()
        released.append(time.perf_counter() - t0)
        lease = PgLease(env, f"bench@p{i}")
        t0 = time.perf_counter()
        lease.release()
        plain.append(time.perf_counter() - t0)
    env.close()
    return statistics.median(forked), statistics.median(released), statistics.median(plain)


def takeover(url: str, repeat: int) -> list[float]:
    from datetime import datetime

    out = []
    home = tempfile.mkdtemp(prefix="rt-fence-bench-")
    base = dict(os.environ, RUNTOOLS_HOME=home)

    def active(tag: str, state: str) -> dict | None:
        p = subprocess.run([TARO, "ps", "-e", url, "--json"], env=base, capture_output=True, text=True)
        if p.returncode != 0:
            return None
        return next((r for r in json.loads(p.stdout) if tag in r["tags"] and r["state"] == state), None)

    def until(fn, what: str, timeout: float = 30.0):
        end = time.monotonic() + timeout
        while (v := fn()) is None:
            if time.monotonic() > end:
                raise SystemExit(f"timed out waiting for {what}")
            time.sleep(0.02)
        return v

    for i in range(repeat):
        job = f"crash{i}"
        holder = subprocess.Popen([RUN, "job", "-e", url, "--serial", "--id", job, "--tag", "h", "--", "sleep", "60"],
                                  env=dict(base, RUNTOOLS_HOST="host-a"), start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        h = until(lambda: active("h", "EXECUTING"), "the holder")
        nxt = subprocess.Popen([RUN, "job", "-e", url, "--serial", "--id", job, "--tag", "n", "--", "true"],
                               env=dict(base, RUNTOOLS_HOST="host-b"), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        until(lambda: active("n", "QUEUED"), "the queued run")
        os.kill(holder.pid, signal.SIGKILL)
        os.killpg(h["child_pid"], signal.SIGKILL)
        killed = time.time()
        holder.wait()
        nxt.wait(60)
        p = subprocess.run([TARO, "history", "-e", url, "--json", job], env=base, capture_output=True, text=True)
        (run,) = [r for r in json.loads(p.stdout) if "n" in r["tags"]]
        out.append(datetime.fromisoformat(run["started_at"]).timestamp() - killed)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    from pg.server import Server

    srv = Server()
    srv.start()
    try:
        forked, released, plain = guardian(srv.url("fence_bench"), args.repeat)
        print(f"guardian: executing() {forked * 1000:.1f} ms, release() {released * 1000:.1f} ms "
              f"(without a guardian {plain * 1000:.1f} ms); medians of {args.repeat}")
        took = takeover(srv.url("fence_takeover"), max(3, args.repeat // 6))
        print(f"crash takeover: median {statistics.median(took) * 1000:.0f} ms, max {max(took) * 1000:.0f} ms "
              f"over {len(took)} (the fence: RUNTOOLS_PG_FENCE, default 0.7 s)")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
