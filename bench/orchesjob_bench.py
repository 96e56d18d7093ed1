"""orchesjob: ours (runtools) against the real orchesjob, measured in the same run.

    .venv/bin/python bench/orchesjob_bench.py [--repeat N] [--peer-venv /tmp/ojvenv]

The peer is installed into a scratch virtualenv (`pip install --ignore-requires-python
orchesjob`) when missing; if that fails, its column says so and only our figures are shown.
Scenarios (each in a fresh $ORCHESJOB_HOME per tool):

    start --sync -- true            wall time of one start that waits for the end
    status --run-key (10k rows)     latest job of one key, 10,000 rows of history (100 keys)
    status --run-key (50k rows)     same with 50,000 rows
    32 starts on one key            32 simultaneous `start` calls, wall time until all returned
    (the floor: `python -c pass` with the same interpreter)

Figures are medians of --repeat runs; the ratio is peer / ours.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

OURS = Path(sys.executable).parent / "orchesjob"


def ensure_peer(venv: Path) -> Path | None:
    exe = venv / "bin" / "orchesjob"
    if exe.exists():
        return exe
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True,
                       timeout=300)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--ignore-requires-python", "orchesjob"],
                       check=True, capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as e:
        print(f"peer orchesjob unavailable ({e}): showing our figures only", file=sys.stderr)
        return None
    return exe if exe.exists() else None


def tool_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "ORCHESJOB_HOME": str(home)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # both tools run from compiled bytecode, as installed
    return env


def compile_ours() -> None:
    import compileall

    import runtools

    compileall.compile_dir(os.path.dirname(runtools.__file__), quiet=1)
    compileall.compile_dir(os.path.dirname(os.path.dirname(runtools.__file__)) + "/orchesjob", quiet=1)


def run(exe: Path, home: Path, *args: str) -> float:
    env = tool_env(home)
    t0 = time.perf_counter()
    p = subprocess.run([str(exe), *args], env=env, capture_output=True, timeout=600)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{exe} {' '.join(args)}: exit {p.returncode}: {p.stderr.decode()[-500:]}")
    return dt


def bench_start_sync(exe: Path, home: Path, repeat: int) -> float:
    run(exe, home, "start", "--run-key", "warm", "--sync", "--", "true")
    return statistics.median(run(exe, home, "start", "--run-key", f"s{i}", "--sync", "--", "true")
                             for i in range(repeat))


# -- history ------------------------------------------------------------------------------------


def seed_ours(home: Path, rows: int, keys: int) -> None:
    from runtools.env.local import LocalEnvironment
    from runtools.model.run import RunRecord
    from runtools.model.status import Stage, Status

    now = time.time() - rows
    with LocalEnvironment(str(home), db_name="orchesjob.db") as env, env.transaction() as tx:
        for i in range(rows):
            jid = str(uuid.uuid4())
            t = now + i
            tx.insert(RunRecord(
                job_id="orchesjob", run_id=jid, created_at=t, stage=Stage.ENDED, status=Status.COMPLETED,
                exit_code=0, started_at=t, ended_at=t + 0.5, pid=1000, child_pid=1001, command=["true"],
                run_key=f"key-{i % keys}", attempt_no=i // keys + 1, tags=["true"],
                stdout_path=str(home / "logs" / f"{jid}.stdout"), stderr_path=str(home / "logs" / f"{jid}.stderr"),
                extra={"strict": False},
            ))


def seed_peer(exe: Path, home: Path, rows: int, keys: int) -> None:
    run(exe, home, "status", "--running")  # let it create its schema
    now = int(time.time()) - rows
    latest: dict[str, tuple[str, int]] = {}
    data = []
    for i in range(rows):
        jid = str(uuid.uuid4())
        key = f"key-{i % keys}"
        t = now + i
        latest[key] = (jid, t)
        data.append((jid, key, 1000, 1001, json.dumps(["true"]), "SUCCEEDED", 0,
                     str(home / "logs" / f"{jid}.stdout"), str(home / "logs" / f"{jid}.stderr"),
                     t, t + 1, t + 1, None, None, None, i // keys + 1, None, 0))
    with sqlite3.connect(home / "orchesjob.db") as c:
        c.executemany("INSERT INTO jobs (job_id, run_key, worker_pid, target_pid, command, status, exit_code, "
                      "stdout_file, stderr_file, started_at, finished_at, updated_at, aborted_at, abort_reason, "
                      "rerun_of_job_id, attempt_no, rerun_reason, strict) VALUES "
                      "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", data)
        c.executemany("INSERT INTO run_keys (run_key, job_id, created_at) VALUES (?,?,?)",
                      [(k, j, t) for k, (j, t) in latest.items()])


def bench_status(exe: Path, home: Path, repeat: int, peer: bool, rows: int) -> float:
    if peer:
        seed_peer(exe, home, rows, 100)
    else:
        seed_ours(home, rows, 100)
    run(exe, home, "status", "--run-key", "key-7")
    return statistics.median(run(exe, home, "status", "--run-key", "key-7") for _ in range(repeat))


# -- the race -----------------------------------------------------------------------------------


def bench_race(exe: Path, home: Path, repeat: int) -> float:
    env = tool_env(home)
    run(exe, home, "status", "--running")
    times = []
    for r in range(repeat):
        key = f"race{r}"
        t0 = time.perf_counter()
        procs = [subprocess.Popen([str(exe), "start", "--run-key", key, "--", "sleep", "30"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(32)]
        outs = [p.communicate(timeout=600) for p in procs]
        times.append(time.perf_counter() - t0)
        docs = [json.loads(o) for o, _ in outs]
        ids = {d["job_id"] for d in docs}
        accepted = sum(d["accepted"] for d in docs)
        if len(ids) != 1 or accepted != 1:
            print(f"  {exe}: race broke the contract: {accepted} accepted, {len(ids)} job ids", file=sys.stderr)
        for jid in ids:
            subprocess.run([str(exe), "abort", "--job-id", jid, "--grace-seconds", "0"], env=env,
                           capture_output=True, timeout=600)
    return statistics.median(times)


def floor(repeat: int) -> float:
    def once() -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        return time.perf_counter() - t0

    return statistics.median(once() for _ in range(repeat))


def burst_floor(repeat: int, code: str) -> float:
    """32 simultaneous interpreters running `code`: with `pass`, no Python CLI can answer 32
    simultaneous starts faster than this."""
    def once() -> float:
        t0 = time.perf_counter()
        ps = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(32)]
        for p in ps:
            p.wait()
        return time.perf_counter() - t0

    return statistics.median(once() for _ in range(repeat))


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--peer-venv", default="/tmp/ojvenv")
    a = ap.parse_args()
    peer = ensure_peer(Path(a.peer_venv))
    compile_ours()
    scenarios = [
        ("start --sync -- true", lambda exe, home, p: bench_start_sync(exe, home, a.repeat)),
        ("status --run-key, 10k rows", lambda exe, home, p: bench_status(exe, home, a.repeat, p, 10_000)),
        ("status --run-key, 50k rows", lambda exe, home, p: bench_status(exe, home, a.repeat, p, 50_000)),
        ("32 simultaneous starts, one key", lambda exe, home, p: bench_race(exe, home, max(3, a.repeat // 2))),
    ]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; load average {load()}; "
          f"floor (python -c pass): {floor(a.repeat) * 1000:.1f} ms")
    bare = burst_floor(a.repeat, "pass")
    with_imports = burst_floor(a.repeat, "import json, sqlite3")
    print(f"floor of the race: 32 x python -c pass at once {bare * 1000:.0f} ms; "
          f"32 x python -c 'import json, sqlite3' at once {with_imports * 1000:.0f} ms")
    print()
    print("| scenario | runtools orchesjob | real orchesjob 1.1.0 | ratio |")
    print("|---|---:|---:|---:|")
    for name, fn in scenarios:
        with tempfile.TemporaryDirectory(prefix="ojb-") as d:
            ours = fn(OURS, Path(d) / "ours", False)
            theirs = fn(peer, Path(d) / "peer", True) if peer else None
            shutil.rmtree(d, ignore_errors=True)
        ratio = f"{theirs / ours:.1f}x" if theirs else "n/a"
        theirs_s = f"{theirs * 1000:.0f} ms" if theirs else "not installed"
        print(f"| {name} | {ours * 1000:.0f} ms | {theirs_s} | {ratio} |", flush=True)
    print(f"\nload average at the end: {load()}")


if __name__ == "__main__":
    main()
