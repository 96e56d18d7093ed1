"""runcue benchmarks: dispatch overhead against a bare asyncio floor, a deep blocked queue, rate accuracy.

Run: .venv/bin/python bench/cue_bench.py [--items 10000] [--blocked 50000] [--repeat 5]

All figures come from one run of this script, so the ratios compare like with like.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time

import runcue

CONCURRENT = 100


async def floor(items: int) -> float:
    """The bare minimum: asyncio.Semaphore + gather over the same no-op handler."""
    sem = asyncio.Semaphore(CONCURRENT)

    async def handler(n: int) -> int:
        return n

    async def one(n: int) -> int:
        async with sem:
            return await handler(n)

    gc.collect()
    t0 = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(items)))
    return time.perf_counter() - t0


async def cue_run(items: int, blocked: int) -> float:
    """`items` no-op async tasks on concurrent=100, maybe with `blocked` items stuck behind a full service.

    Completion is noticed through on_complete in both cases (join() would also
    wait for the blocked backlog), so the two runs pay for the same callbacks.
    """
    cue = runcue.Cue()
    cue.service("fast", concurrent=CONCURRENT)
    cue.service("full", concurrent=1)
    hold = asyncio.Event()
    all_done = asyncio.Event()
    completed = 0

    @cue.task("noop", uses="fast")
    async def noop(work: runcue.WorkUnit) -> None:
        return None

    @cue.task("hog", uses="full")
    async def hog(work: runcue.WorkUnit) -> None:
        await hold.wait()

    @cue.on_complete
    def count(work: runcue.WorkUnit, result: object, duration: float) -> None:
        nonlocal completed
        completed += 1
        if completed == items:
            all_done.set()

    cue.start()
    if blocked:
        for _ in range(blocked + 1):
            await cue.submit("hog")
        while len(cue.debug_blocked()) < blocked:  # setup only, not timed: the backlog is queued
            await asyncio.sleep(0.01)
    gc.collect()  # setup garbage is not charged to the measurement
    t0 = time.perf_counter()
    for _ in range(items):
        await cue.submit("noop")
    await all_done.wait()
    elapsed = time.perf_counter() - t0
    hold.set()
    await cue.stop(timeout=0)
    return elapsed


async def rate_accuracy(limit: int, seconds: float) -> dict[str, float]:
    """Start as much as a `limit/s` service allows for `seconds`; check every 1 s window."""
    total = int(limit * seconds)
    async with runcue.Cue() as cue:
        cue.service("api", rate=f"{limit}/s")

        @cue.task("call", uses="api")
        async def call(work: runcue.WorkUnit) -> None:
            return None

        for _ in range(total):
            await cue.submit("call")
    starts = sorted(w.started_at for w in await cue.list(limit=total) if w.started_at is not None)
    worst = max(sum(1 for s in starts[i:] if s < t + 1.0) for i, t in enumerate(starts))
    span = starts[-1] - starts[0]
    # a sliding window allows `limit` at t=0, then `limit` more at t=1, ...: ideal span for `total` starts
    ideal = (total - 1) // limit
    return {"starts": len(starts), "max_in_any_1s": worst, "limit": limit, "span": span, "ideal_span": ideal}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--blocked", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--rate", type=int, default=200, help="rate limit per second for the accuracy check")
    parser.add_argument("--rate-seconds", type=float, default=3.0)
    args = parser.parse_args()

    runs: dict[str, list[float]] = {"floor": [], "plain": [], "deep": []}
    for _ in range(args.repeat):  # interleaved, so a noisy moment hits all three alike
        runs["floor"].append(asyncio.run(floor(args.items)))
        runs["plain"].append(asyncio.run(cue_run(args.items, 0)))
        runs["deep"].append(asyncio.run(cue_run(args.items, args.blocked)))
    base, plain, deep = (statistics.median(runs[k]) for k in ("floor", "plain", "deep"))
    rate = asyncio.run(rate_accuracy(args.rate, args.rate_seconds))

    print(f"{args.items} no-op async tasks, concurrent={CONCURRENT}, median of {args.repeat} runs")
    print(f"  floor (Semaphore+gather)     {base * 1000:8.1f} ms  {args.items / base:10.0f} tasks/s")
    print(f"  runcue                       {plain * 1000:8.1f} ms  {args.items / plain:10.0f} tasks/s"
          f"   {plain / base:.2f}x floor (bar 2.5x)")
    print(f"  runcue, {args.blocked} blocked      {deep * 1000:8.1f} ms  {args.items / deep:10.0f} tasks/s"
          f"   {deep / plain:.2f}x unblocked (bar 1.2x)")
    print(f"rate {args.rate}/s for {args.rate_seconds:g}s: {rate['starts']} starts, "
          f"max {rate['max_in_any_1s']} in any 1s window (limit {args.rate}), "
          f"span {rate['span']:.3f}s (ideal {rate['ideal_span']:.0f}s)")
    ok = plain / base <= 2.5 and deep / plain <= 1.2 and rate["max_in_any_1s"] <= args.rate
    print("PASS" if ok else "FAIL")


if __name__ == "__main__":
    main()
