"""Foundation benchmarks (issue 2, "Measured"): wrapper overhead, history scale, event latency.

    .venv/bin/python bench/foundation_bench.py [--repeat N] [--rows 1000,100000,1000000]
                                               [--latency-runs N] [--write-readme]

Everything runs in a private $RUNTOOLS_HOME and $XDG_RUNTIME_DIR under a temp dir (removed at
the end). Figures are medians of interleaved repetitions from one run of this script, so ratios
compare like with like on the same machine at the same moment.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from installed import compile_runtools, installed_env

BIN = Path(sys.executable).parent
RUN = str(BIN / "run")
TARO = str(BIN / "taro")
README = Path(__file__).with_name("README.md")
LOAD = os.getloadavg()


def wall(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{argv} exited {p.returncode}: {p.stderr.decode()}")
    return dt


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


# -- 1. wrapper overhead ---------------------------------------------------------------------


def overhead(env: dict[str, str], repeat: int) -> dict[str, float]:
    true = shutil.which("true") or "/bin/true"
    cases = {
        "fork/exec `true`": [true],
        "`python -c pass`": [sys.executable, "-c", "pass"],
        "`run job -- true`": [RUN, "job", "--id", "bench", "--", true],
    }
    for argv in cases.values():  # warm the page cache and create the environment
        wall(argv, env)
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeat):
        for name, argv in cases.items():
            times[name].append(wall(argv, env))
    return {k: statistics.median(v) for k, v in times.items()}


# -- 2. history scale ------------------------------------------------------------------------


def fill(env_dir: Path, upto: int, have: int) -> None:
    """Insert rows have..upto-1 straight through the store's own INSERT (no wrappers)."""
    from runtools.env.local import store
    from runtools.model.ids import new_run_id
    from runtools.model.run import RunRecord
    from runtools.model.status import Stage, Status

    env_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    rng = random.Random(have)
    conn = store.connect(str(env_dir / "runs.db"))
    start = time.time() - 365 * 86400
    step = 365 * 86400 / 1_000_000
    batch = []
    for i in range(have, upto):
        created = start + i * step
        job = f"job-{rng.randrange(200)}"
        rid = new_run_id(int(created * 1e9))
        status = Status.COMPLETED if rng.random() < 0.9 else rng.choice([Status.FAILED, Status.STOPPED, Status.LOST])
        r = RunRecord(
            job, rid, created, stage=Stage.ENDED, status=status, exit_code=0 if status is Status.COMPLETED else 1,
            started_at=created + 0.01, ended_at=created + rng.uniform(0.1, 600), host="bench", user="bench",
            pid=rng.randrange(1, 1 << 22), child_pid=rng.randrange(1, 1 << 22), cwd="/home/bench",
            command=["/usr/local/bin/" + job + ".sh", "--full"], tags=["nightly"] if i % 7 == 0 else [],
            stdout_path=f"{env_dir}/output/{job}/{rid}.stdout", stderr_path=f"{env_dir}/output/{job}/{rid}.stderr",
        )
        batch.append(store.row_values(r))
        if len(batch) >= 20_000:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(store.INSERT, batch)
            conn.execute("COMMIT")
            batch.clear()
    if batch:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(store.INSERT, batch)
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def scale(env: dict[str, str], base: Path, sizes: list[int], repeat: int) -> list[tuple[int, float, float]]:
    """One environment per size, each with one live run (lease held here); the commands are
    interleaved across sizes so that load changes on the machine hit every size alike."""
    from runtools.env.local import LocalEnvironment
    from runtools.model.run import RunRecord
    from runtools.model.status import Stage, State

    held = []
    cmds: dict[int, tuple[list[str], list[str]]] = {}
    for n in sizes:
        d = base / f"rows{n}"
        t = time.perf_counter()
        fill(d, n, 0)
        print(f"  {n:>9,} rows stored in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        local = LocalEnvironment(str(d))
        live = RunRecord("live", "live1", time.time(), stage=Stage.RUNNING, state=State.EXECUTING,
                         started_at=time.time())
        lease = local.lease(live)
        with local.transaction() as tx:
            tx.insert(live)
        held.append((local, lease))
        cmds[n] = ([TARO, "history", "-n", "20", "-e", str(d)], [TARO, "ps", "-e", str(d)])
        for argv in cmds[n]:
            wall(argv, env)  # warm up
    times: dict[int, tuple[list[float], list[float]]] = {n: ([], []) for n in sizes}
    for _ in range(repeat):
        for n in sizes:
            times[n][0].append(wall(cmds[n][0], env))
            times[n][1].append(wall(cmds[n][1], env))
    for local, lease in held:
        lease.release()
        local.close()
    return [(n, statistics.median(times[n][0]), statistics.median(times[n][1])) for n in sizes]


# -- 3. event latency ------------------------------------------------------------------------


def listeners(runtime: Path) -> int:
    base = runtime / "runtools"
    return sum(len(os.listdir(d / "l")) for d in base.iterdir() if (d / "l").is_dir()) if base.is_dir() else 0


def until(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit("benchmark condition timed out")
        time.sleep(0.002)


def latency(env: dict[str, str], runtime: Path, runs: int) -> tuple[list[float], list[float]]:
    """Per run: (`taro wait` exit seen) - ended_at and (`taro listen` line read) - ended_at."""
    import json

    from runtools.env import open_environment

    wait_lat, listen_lat = [], []
    listen = subprocess.Popen([TARO, "listen", "--json", "lat"], stdout=subprocess.PIPE, env=env)
    until(lambda: listeners(runtime) >= 1)
    sel = selectors.DefaultSelector()
    sel.register(listen.stdout, selectors.EVENT_READ)
    buf = b""
    os.environ.update(env)
    with open_environment("local") as renv:
        for i in range(runs):
            run = subprocess.Popen([RUN, "job", "--id", "lat", "--run-id", f"r{i}", "--", "sh", "-c", "read _ || :"],
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
            until(lambda i=i: (r := renv.get_run(f"lat@r{i}")) is not None and r.state == "EXECUTING")
            before = listeners(runtime)
            waiter = subprocess.Popen([TARO, "wait", f"lat@r{i}"], stdout=subprocess.DEVNULL, env=env)
            until(lambda before=before: listeners(runtime) > before)
            run.stdin.close()  # the command ends now
            t_listen = None
            while t_listen is None:
                for _ in sel.select(10):
                    buf += os.read(listen.stdout.fileno(), 65536)
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    ev = json.loads(line)
                    if ev["event"] == "ended" and ev["run_id"] == f"r{i}":
                        t_listen = time.time()
            waiter.wait(10)
            t_wait = time.time()
            run.wait(10)
            ended_at = renv.get_run(f"lat@r{i}").ended_at
            wait_lat.append(t_wait - ended_at)
            listen_lat.append(t_listen - ended_at)
    listen.terminate()
    listen.wait(5)
    return wait_lat, listen_lat


# -- report ----------------------------------------------------------------------------------


def report(ov: dict[str, float], sc: list[tuple[int, float, float]], lat: tuple[list[float], list[float]],
           repeat: int) -> str:
    true_t, py_t, run_t = ov.values()
    lines = [
        "## Foundation",
        "",
        "`.venv/bin/python bench/foundation_bench.py --write-readme` (options: `--repeat`, `--rows`,",
        "`--latency-runs`). One run of the script; each figure is a median of interleaved repetitions",
        f"({repeat} per case) in a private `$RUNTOOLS_HOME`. Machine: {os.cpu_count()} cores, "
        f"CPython {platform.python_version()}, {platform.system()} {platform.release()}; load average "
        f"{LOAD[0]:.1f} at start, {os.getloadavg()[0]:.1f} at the end (other work shares the machine).",
        "",
        "### Wrapper overhead (whole-process wall time)",
        "",
        "| command | median | vs `python -c pass` | vs fork/exec `true` | bar |",
        "|---|---|---|---|---|",
        f"| fork/exec `true` | {ms(true_t)} | {true_t / py_t:.2f}x | 1.00x | |",
        f"| `python -c pass` (same interpreter) | {ms(py_t)} | 1.00x | {py_t / true_t:.1f}x | |",
        f"| `run job -- true` | {ms(run_t)} | **{run_t / py_t:.2f}x** | {run_t / true_t:.1f}x | 2.0x (aim 1.3x) |",
        "",
        "### History scale (`taro` wall time, one live run in `ps`, sizes interleaved)",
        "",
        "| rows | `taro history -n 20` | `taro ps` |",
        "|---|---|---|",
    ]
    base_h, base_p = sc[0][1], sc[0][2]
    for n, h, p in sc:
        lines.append(f"| {n:,} | {ms(h)} ({h / base_h:.2f}x) | {ms(p)} ({p / base_p:.2f}x) |")
    lines += [
        "",
        f"Bar: the {sc[-1][0]:,}-row figure at most 1.2x the {sc[0][0]:,}-row figure. Rows are inserted "
        "straight through the store's own `INSERT`/`row_values` (200 jobs, a year of history).",
        "",
        "### Event latency (run ended_at -> observed by the benchmark)",
        "",
        "| path | p50 | p95 | max | bar |",
        "|---|---|---|---|---|",
    ]
    for name, v in (("`taro wait JOB@RUN` returns (process exit)", lat[0]), ("`taro listen --json` prints", lat[1])):
        lines.append(f"| {name} | {ms(pct(v, 50))} | {ms(pct(v, 95))} | {ms(max(v))} | p50 < 50 ms |")
    lines += [
        "",
        f"{len(lat[0])} runs. The end is written to SQLite, then pushed as a datagram to each listener; "
        "`taro wait` time includes its own interpreter exit.",
        "",
    ]
    return "\n".join(lines)


def write_readme(section: str) -> None:
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, x in enumerate(lines) if x.strip() == "## Foundation"), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "".join(lines[:start]) + section + ("\n" if end < len(lines) else "") + "".join(lines[end:])
    README.write_text(new)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--rows", default="1000,100000,1000000")
    ap.add_argument("--latency-runs", type=int, default=40)
    ap.add_argument("--write-readme", action="store_true")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rtbench-"))
    runtime = Path(tempfile.mkdtemp(prefix="rtb-", dir="/tmp"))
    env = dict(os.environ, RUNTOOLS_HOME=str(tmp / "home"), XDG_RUNTIME_DIR=str(runtime),
               XDG_CONFIG_HOME=str(tmp / "config"))
    env.pop("RUNTOOLS_ENV", None)
    env = installed_env(env)
    os.environ.update(env)
    compile_runtools()
    try:
        print("wrapper overhead ...", file=sys.stderr)
        ov = overhead(env, a.repeat)
        print("event latency ...", file=sys.stderr)
        lat = latency(env, runtime, a.latency_runs)
        print("history scale ...", file=sys.stderr)
        sc = scale(env, tmp / "scale", [int(x) for x in a.rows.split(",")], a.repeat)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(runtime, ignore_errors=True)
    section = report(ov, sc, lat, a.repeat)
    print(section)
    if a.write_readme:
        write_readme(section)


if __name__ == "__main__":
    main()
