"""taro serve / taro -H figures (issue 10).

    .venv/bin/python bench/serve_bench.py [--rows 1000,1000000] [--repeat 30] [--clients 100]

1. GET /api/runs?limit=100, ?active=true and a deep keyset page (before= a cursor in the middle
   of the history) at each history size: median latency over one keep-alive connection.
2. Event latency: a run's lifecycle events from the moment they are recorded to an SSE client
   (p50/p95 over 20 runs x their events).
3. N concurrent SSE clients held open while 40 runs' events pass: the server's RSS before/after.
4. `taro -H a,b,c ps` (three taro serve) against one local `taro ps`: median wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from foundation_bench import fill

BIN = Path(sys.executable).parent
TOKEN = "bench-token-0123456789"


def serve(env_dir: Path, tokens: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([str(BIN / "taro"), "serve", "-e", str(env_dir), "--port", "0", "--token-file", str(tokens)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    line = p.stdout.readline()
    m = re.search(r"(http://\S+)", line)
    if not m:
        raise SystemExit(f"taro serve did not start: {line} {p.stderr.read()}")
    return p, m.group(1)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def ms(xs: list[float]) -> str:
    return f"{1000 * statistics.median(xs):.1f} ms"


def latency(url: str, repeat: int) -> dict[str, str]:
    out = {}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        first = c.get("/api/runs", params={"limit": 100})
        runs = c.get("/api/runs", params={"limit": 1, "since": "200d", "until": "180d"}).json()
        deep = f"{datetime.fromisoformat(runs[0]['created_at']).timestamp()!r}~{runs[0]['instance_id']}" \
            if runs else first.headers.get("x-next-cursor")
        for name, params in (("limit=100", {"limit": 100}), ("active=true", {"active": "true"}),
                             ("deep page (before=, limit=100)", {"limit": 100, "before": deep})):
            c.get("/api/runs", params=params)  # warm
            ts = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                r = c.get("/api/runs", params=params)
                ts.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
            out[name] = ms(ts)
    return out


def event_latency(url: str, env: dict[str, str], env_dir: Path, runs: int = 20) -> tuple[float, float, int]:
    lags: list[float] = []
    ready = threading.Event()
    stop = threading.Event()

    def listen() -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=None) as c, \
                c.stream("GET", "/api/events") as resp:
            ready.set()
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    now = time.time()
                    ev = json.loads(line[6:])
                    lags.append(now - datetime.fromisoformat(ev["timestamp"]).timestamp())
                    if ev["event"] == "ended" and ev["job_id"] == "bench-last":
                        return
                if stop.is_set():
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    ready.wait(10)
    time.sleep(0.3)
    for i in range(runs):
        subprocess.run([str(BIN / "run"), "job", "-e", str(env_dir), "--id",
                        "bench-last" if i == runs - 1 else "bench", "--", "true"], env=env, check=True)
    t.join(30)
    stop.set()
    lags.sort()
    return statistics.median(lags), lags[int(0.95 * (len(lags) - 1))], len(lags)


def many_clients(url: str, pid: int, env: dict[str, str], env_dir: Path, n: int) -> tuple[int, int, int, int]:
    import asyncio

    before = rss_kib(pid)
    got = [0] * n

    async def main() -> tuple[int, int]:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=None,
                                     limits=httpx.Limits(max_connections=n + 10)) as c:
            async def one(i: int) -> None:
                async with c.stream("GET", "/api/events") as resp:
                    async for line in resp.aiter_lines():
                        if line.startswith("data: "):
                            got[i] += 1
                            if '"ended"' in line and "bench-end" in line:
                                return

            tasks = [asyncio.create_task(one(i)) for i in range(n)]
            await asyncio.sleep(2)
            held = rss_kib(pid)

            def runs() -> None:
                for k in range(40):  # 5 events each: created, executing, ended, ...
                    subprocess.run([str(BIN / "run"), "job", "-e", str(env_dir), "--id",
                                    "bench-end" if k == 39 else "bench", "--", "true"], env=env, check=True)

            await asyncio.to_thread(runs)
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            return held, rss_kib(pid)

    held, after = asyncio.run(main())
    return before, held, after, min(got)


def fanout(env: dict[str, str], base: Path, tokens: Path, repeat: int) -> tuple[str, str]:
    procs, urls = [], []
    for name in ("a", "b", "c"):
        d = base / f"host-{name}"
        fill(d, 1000, 0)
        p, u = serve(d, tokens, env)
        procs.append(p)
        urls.append(u)
    local = base / "host-a"
    env2 = {**env, "RUNTOOLS_TOKEN": TOKEN}
    try:
        t_local, t_many = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run([str(BIN / "taro"), "ps", "-e", str(local)], env=env, check=True, capture_output=True)
            t_local.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            subprocess.run([str(BIN / "taro"), "-H", ",".join(urls), "ps"], env=env2, check=True, capture_output=True)
            t_many.append(time.perf_counter() - t0)
        return ms(t_local), ms(t_many)
    finally:
        for p in procs:
            p.terminate()
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="1000,1000000")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--parts", default="latency,events,clients,fanout")
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    base = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    runtime = Path(tempfile.mkdtemp(prefix="sb-", dir="/tmp"))
    env = {**os.environ, "RUNTOOLS_HOME": str(base / "home"), "XDG_RUNTIME_DIR": str(runtime)}
    tokens = base / "tokens"
    tokens.write_text(f"operate:{TOKEN} bench\n")
    if "latency" in parts:
        have = 0
        d = base / "history"
        for rows in sorted(int(x) for x in a.rows.split(",")):
            t0 = time.time()
            fill(d, rows, have)
            have = rows
            p, url = serve(d, tokens, env)
            try:
                print(f"{rows:>9,} runs (filled in {time.time() - t0:.0f} s): {latency(url, a.repeat)}", flush=True)
            finally:
                p.terminate()
                p.wait()
    d = base / "live"
    subprocess.run([str(BIN / "run"), "job", "-e", str(d), "--id", "warm", "--", "true"], env=env, check=True)
    p, url = serve(d, tokens, env)
    try:
        if "events" in parts:
            p50, p95, n = event_latency(url, env, d)
            print(f"event -> SSE client: p50 {1000 * p50:.1f} ms, p95 {1000 * p95:.1f} ms ({n} events)", flush=True)
        if "clients" in parts:
            before, held, after, least = many_clients(url, p.pid, env, d, a.clients)
            print(f"{a.clients} SSE clients: server RSS {before / 1024:.1f} MiB idle, {held / 1024:.1f} MiB with them "
                  f"connected, {after / 1024:.1f} MiB after 40 more runs (every client got all {least} events)",
                  flush=True)
    finally:
        p.terminate()
        p.wait()
    if "fanout" in parts:
        local, many = fanout(env, base, tokens, min(a.repeat, 15))
        print(f"taro ps (local): {local}; taro -H a,b,c ps (three taro serve): {many}", flush=True)


if __name__ == "__main__":
    main()
