"""runcue-sim: exercise runcue dependency patterns with fake services.

Scenarios build artifacts in memory; handlers sleep for a simulated latency
and fail at a chosen rate. The run always ends: when all work has ended, or
when `--timeout` expires (running work is then abandoned).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, TextIO

from runtools.cue.engine import Cue
from runtools.cue.models import WorkState, WorkUnit
from runtools.cue.rates import parse_rate

SCENARIOS: dict[str, str] = {
    "single_queue": "Independent tasks, one service",
    "pipeline": "Extract → Transform → Load chain",
    "fanout": "Split → parallel process → aggregate",
    "dynamic": "Complex dependencies with rebuild cycles",
}
FANOUT_PARTS = 5
SYMBOLS = {
    "queued": "+",
    "started": "▶",
    "completed": "✓",
    "failed": "✗",
    "skipped": "↷",
    "invalidated": "⟳",
}


class SimulatedError(Exception):
    """A failure injected by --error-rate."""


@dataclass
class SimConfig:
    """Everything the command line decides."""

    scenario: str = "single_queue"
    count: int = 20
    latency: float = 50.0  # ms
    jitter: float = 0.2  # +- fraction of latency
    outliers: float = 0.0  # fraction of calls 10x slower
    error_rate: float = 0.0
    concurrent: int = 10
    rate_limit: str | None = None
    submit_rate: float = 0.0  # work per second, 0 = all at once
    seed: int | None = None
    timeout: float = 60.0
    verbose: bool = False
    tui: bool = True


def rate_string(value: str) -> str:
    """A runcue rate string; a bare number means per second."""
    text = value.strip()
    if text.isascii() and text.isdigit():
        text = f"{text}/s"
    try:
        parse_rate(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


#: most work items one simulation creates (they are all created up front)
MAX_SIM_COUNT = 1_000_000


def _number(low: float, high: float, what: str, low_open: bool = False) -> Any:
    """argparse type: a finite number in [low, high] ((low, high] with `low_open`)."""

    def convert(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
        if not (low < v <= high if low_open else low <= v <= high):  # NaN fails both
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return v

    return convert


def _whole(low: int, high: int) -> Any:
    """argparse type: a whole number in [low, high]."""

    def convert(text: str) -> int:
        from runtools.cli.common import whole_number

        v = whole_number(text)
        if not low <= v <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not between {low} and {high}")
        return v

    return convert


class Simulation:
    """One simulated run: a Cue, a scenario's work, counters and an event log."""

    def __init__(self, cfg: SimConfig, out: TextIO | None = None) -> None:
        self.cfg = cfg
        self.out = out or sys.stdout
        self.rng = random.Random(cfg.seed)
        self.artifacts: dict[str, float] = {}
        self.counts: Counter[str] = Counter()
        self.per_task: dict[str, Counter[str]] = {}
        self.recent: deque[str] = deque(maxlen=8)
        self.started_at = 0.0
        self.duration = 0.0
        self.timed_out = False
        self.live: Any = None
        self.latency_s = cfg.latency / 1000.0
        warn = max(0.25, self.latency_s * 10)
        stall_timeout = warn * 4
        if cfg.rate_limit:
            stall_timeout = max(stall_timeout, parse_rate(cfg.rate_limit)[1] * 1.5)
        self.cue = Cue(
            stall_warn_after=warn, stall_timeout=stall_timeout, retry_delay=max(0.01, self.latency_s)
        )
        self._setup()

    # ------------------------------------------------------------ scenarios

    def _setup(self) -> None:
        cue, cfg = self.cue, self.cfg
        cue.service("api", concurrent=cfg.concurrent, rate=cfg.rate_limit)
        cue.service("local", concurrent=max(1, cfg.concurrent // 2))
        cue.service("db", concurrent=2)
        tasks = {
            "single_queue": [("api_fetch", "api")],
            "pipeline": [("extract", "api"), ("transform", "local"), ("load", "db")],
            "fanout": [("split", "local"), ("process", "api"), ("aggregate", "local")],
            "dynamic": [("fetch", "api"), ("process", "local"), ("publish", "db")],
        }[cfg.scenario]
        for name, service in tasks:
            cue.task(name, uses=service, retry=2)(self._handler)
            self.per_task[name] = Counter()
        cue.is_ready(self._is_ready)
        cue.is_stale(self._is_stale)
        cue.on_start(lambda w: self._event("started", w, f"attempt {w.attempt}"))
        cue.on_complete(lambda w, r, d: self._event("completed", w, f"{d * 1000:.0f}ms"))
        cue.on_failure(lambda w, e: self._event("failed", w, f"{type(e).__name__}: {e}"))
        cue.on_skip(lambda w: self._event("skipped", w, "output valid"))
        cue.on_stall_warning(self._stall)

    def plan(self) -> list[tuple[str, dict[str, Any]]]:
        """The work a scenario submits, in order."""
        n, scenario = self.cfg.count, self.cfg.scenario
        if scenario == "single_queue":
            return [("api_fetch", {"name": f"api_{i:03d}", "out": f"api_{i:03d}"}) for i in range(n)]
        if scenario == "pipeline":
            work: list[tuple[str, dict[str, Any]]] = []
            for i in range(n):
                work += [
                    ("load", {"name": f"load_{i:03d}", "in": [f"clean_{i}"], "out": f"loaded_{i}"}),
                    ("transform", {"name": f"tf_{i:03d}", "in": [f"raw_{i}"], "out": f"clean_{i}"}),
                    ("extract", {"name": f"ex_{i:03d}", "out": f"raw_{i}"}),
                ]
            return work
        if scenario == "fanout":
            work = []
            for j in range(max(1, n // FANOUT_PARTS)):
                parts = [f"part_{j}_{k}" for k in range(FANOUT_PARTS)]
                work.append(("split", {"name": f"split_{j:03d}", "out": f"split_{j}"}))
                work += [
                    ("process", {"name": f"proc_{j:03d}_{k}", "in": [f"split_{j}"], "out": part})
                    for k, part in enumerate(parts)
                ]
                work.append(("aggregate", {"name": f"agg_{j:03d}", "in": parts, "out": f"agg_{j}"}))
            return work
        work = []
        for i in range(n):
            work += self._dynamic_item(i)
        return work

    def _dynamic_item(self, i: int) -> list[tuple[str, dict[str, Any]]]:
        return [
            ("publish", {"name": f"pub_{i:03d}", "in": [f"result_{i}"], "out": f"published_{i}"}),
            ("process", {"name": f"proc_{i:03d}", "in": [f"data_{i}"], "out": f"result_{i}"}),
            ("fetch", {"name": f"fetch_{i:03d}", "out": f"data_{i}"}),
        ]

    async def _checker(self) -> None:
        """dynamic: invalidate some fetched data, forcing fetch and its dependants to rebuild."""
        budget = max(1, self.cfg.count // 4)
        while budget > 0:
            await asyncio.sleep(max(0.005, self.latency_s * 2))
            done = [i for i in range(self.cfg.count) if f"published_{i}" in self.artifacts]
            if not done:
                continue
            i = self.rng.choice(done)
            budget -= 1
            for name in (f"data_{i}", f"result_{i}", f"published_{i}"):
                self.artifacts.pop(name, None)
            self._log("invalidated", "fetch", f"data_{i}", "checker")
            self.counts["invalidated"] += 1
            for task, params in self._dynamic_item(i):
                await self._submit(task, params)

    def _is_ready(self, work: WorkUnit) -> bool:
        return all(name in self.artifacts for name in work.params.get("in", ()))

    def _is_stale(self, work: WorkUnit) -> bool:
        made = self.artifacts.get(work.params["out"])
        if made is None:
            return True
        return any(self.artifacts.get(name, 0.0) > made for name in work.params.get("in", ()))

    async def _handler(self, work: WorkUnit) -> dict[str, Any]:
        delay = self.latency_s * (1 + self.rng.uniform(-self.cfg.jitter, self.cfg.jitter))
        if self.cfg.outliers and self.rng.random() < self.cfg.outliers:
            delay *= 10
        await asyncio.sleep(max(0.0, delay))
        if self.cfg.error_rate and self.rng.random() < self.cfg.error_rate:
            raise SimulatedError(f"injected failure in {work.params['name']}")
        self.artifacts[work.params["out"]] = time.monotonic()
        return {"out": work.params["out"]}

    # --------------------------------------------------------------- events

    def _event(self, event: str, work: WorkUnit, details: str) -> None:
        self.counts[event] += 1
        if event in ("completed", "failed", "skipped"):
            self.per_task[work.task][event] += 1
        self._log(event, work.task, work.id, details)

    def _log(self, event: str, task: str, work_id: str, details: str) -> None:
        if not self.cfg.verbose:
            return
        stamp = time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"
        line = f"{stamp} {SYMBOLS.get(event, ' ')} {event:<12} {'[' + task + ']':<16} {work_id:<20} {details}"
        self._print(line)

    def _print(self, line: str) -> None:
        if self.live is not None:
            self.live.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self.out, flush=True)

    def _stall(self, seconds: float, pending: int) -> None:
        blocked = self.cue.debug_blocked()
        self._print(
            f"⚠️  Stall detected! {len(blocked)} work items blocked ({seconds:.1f}s without progress):"
        )
        groups: dict[tuple[str, str], list[str]] = {}
        for item in blocked:
            groups.setdefault((item["work"].task, item["reason"]), []).append(item["details"])
        for (task, reason), details in sorted(groups.items()):
            self._print(f"    {task}: {reason} x{len(details)} - {details[0]}")

    # ------------------------------------------------------------------ run

    async def _submit(self, task: str, params: dict[str, Any]) -> None:
        wid = await self.cue.submit(task, params=params)
        self.counts["submitted"] += 1
        self._log("queued", task, wid, params["name"])

    async def _submit_all(self) -> None:
        gap = 1.0 / self.cfg.submit_rate if self.cfg.submit_rate > 0 else 0.0
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for n, (task, params) in enumerate(self.plan()):
            if gap:
                delay = t0 + n * gap - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self._submit(task, params)

    async def _drive(self) -> None:
        checker = asyncio.ensure_future(self._checker()) if self.cfg.scenario == "dynamic" else None
        try:
            await self._submit_all()
            await self.cue.join()
            if checker is not None:
                await checker
                await self.cue.join()
        finally:
            if checker is not None:
                checker.cancel()

    async def run(self) -> int:
        """Run to the end or to --timeout; print the summary; 0 if all work ended, 1 on timeout."""
        loop = asyncio.get_running_loop()
        self.started_at = loop.time()
        if self.cfg.verbose:
            self._print(f"{'TIME':<14} {'EVENT':<12} {'TASK':<16} {'WORK_ID':<20} DETAILS")
            self._print("-" * 80)
        self.cue.start()
        refresher = asyncio.ensure_future(self._refresh()) if self.live is not None else None
        timed_out = False
        try:
            await asyncio.wait_for(self._drive(), self.cfg.timeout)
        except TimeoutError:
            timed_out = True
        finally:
            if refresher is not None:
                refresher.cancel()
            await self.cue.stop(timeout=0.2)
        self.duration = loop.time() - self.started_at
        self.timed_out = timed_out
        if self.live is not None:
            self.live.update(self.render(self.duration), refresh=True)
        return 1 if timed_out else 0

    async def _refresh(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.live.update(self.render(loop.time() - self.started_at), refresh=True)
            await asyncio.sleep(0.25)

    def render(self, elapsed: float) -> Any:
        """The live view: per-task progress, services and throughput."""
        from rich.table import Table

        done = self.counts["completed"] + self.counts["failed"] + self.counts["skipped"]
        table = Table(title=f"runcue-sim · {self.cfg.scenario} · {elapsed:.1f}s", expand=False)
        for col in ("task", "pending", "running", "completed", "skipped", "failed"):
            table.add_column(col, justify="left" if col == "task" else "right")
        states: dict[str, Counter[str]] = {name: Counter() for name in self.per_task}
        for item in self.cue._entries.values():
            work = item.work
            if work.state in (WorkState.PENDING, WorkState.RUNNING) and work.task in states:
                states[work.task][work.state.value] += 1
        for name, counter in self.per_task.items():
            table.add_row(
                name,
                str(states[name]["pending"]),
                str(states[name]["running"]),
                str(counter["completed"]),
                str(counter["skipped"]),
                str(counter["failed"]),
            )
        rate = done / elapsed if elapsed > 0 else 0.0
        services = " · ".join(
            f"{name} {svc.running}/{svc.concurrent or '∞'}" for name, svc in self.cue._services.items()
        )
        table.caption = f"submitted {self.counts['submitted']} · ended {done} · {rate:.1f} work/s\n{services}"
        return table

    def summary(self) -> None:
        """Print the closing summary (after the live view has ended)."""
        duration, timed_out = self.duration, self.timed_out
        c = self.counts
        unfinished = sum(
            1 for e in self.cue._entries.values() if e.work.state in (WorkState.PENDING, WorkState.RUNNING)
        )
        done = c["completed"] + c["skipped"]
        lines = [
            "",
            f"Summary ({self.cfg.scenario})",
            f"  submitted:   {c['submitted']}",
            f"  completed:   {done} ({c['skipped']} skipped)",
            f"  failed:      {c['failed']}",
        ]
        if c["invalidated"]:
            lines.append(f"  invalidated: {c['invalidated']}")
        if unfinished:
            lines.append(f"  unfinished:  {unfinished}")
        lines += [
            f"  duration:    {duration:.2f}s",
            f"  throughput:  {(done + c['failed']) / duration if duration else 0.0:.1f} work/s",
        ]
        if timed_out:
            lines.append(f"timeout: stopped after {self.cfg.timeout:g}s (--timeout)")
        for line in lines:
            print(line, file=self.out, flush=True)


def build_parser() -> argparse.ArgumentParser:
    """The command line of runcue-sim."""
    from runtools.cli.common import MAX_COUNT, ArgParser
    from runtools.model.durations import MAX_DURATION_S

    fraction = _number(0.0, 1.0, "a fraction between 0 and 1")
    p = ArgParser(prog="runcue-sim", description="Simulate runcue dependency patterns.")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="single_queue")
    p.add_argument("--list-scenarios", action="store_true", help="list the scenarios and exit")
    p.add_argument("-n", "--count", type=_whole(1, MAX_SIM_COUNT), default=20,
                   help=f"work items to create (default 20, at most {MAX_SIM_COUNT})")
    p.add_argument("-l", "--latency", type=_number(0.0, MAX_DURATION_S * 1000.0, "a latency in ms (0 to 100 years)"),
                   default=50.0, help="handler latency in ms (default 50)")
    p.add_argument("-j", "--jitter", type=fraction, default=0.2, help="latency jitter, +- fraction (0 to 1)")
    p.add_argument("--outliers", type=fraction, default=0.0, help="fraction of calls 10x slower (default 0)")
    p.add_argument("-e", "--error-rate", type=fraction, default=0.0, help="fraction of calls that fail (0 to 1)")
    p.add_argument("-c", "--concurrent", type=_whole(1, MAX_COUNT), default=10,
                   help="concurrency of the api service")
    p.add_argument("-r", "--rate-limit", type=rate_string, default=None,
                   help="rate of the api service, e.g. 600/min (a bare number is per second)")
    p.add_argument("-s", "--submit-rate", type=_number(0.0, float(MAX_COUNT), "a rate of 0 or more per second"),
                   default=0.0, help="submissions per second (default: all at once)")
    p.add_argument("--seed", type=int, default=None, help="random seed for a repeatable run")
    p.add_argument("--timeout", type=_number(0.0, MAX_DURATION_S, "a number of seconds (up to 100 years)", True),
                   default=60.0, help="end the run after this many seconds")
    p.add_argument("-v", "--verbose", action="store_true", help="print the event log")
    p.add_argument("--no-tui", dest="tui", action="store_false", help="no live terminal view")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the runcue-sim console script. Exit 0 when the reader of stdout left."""
    from runtools.cli.common import guard_stdio, reader_gone

    guard_stdio()  # printing must be safe with a closed stdout or stderr
    try:
        return _main(argv)
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        return reader_gone()


def _main(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2): returned, output flushed here
        if e.code is not None and not isinstance(e.code, int):
            raise
        sys.stdout.flush()
        return e.code or 0
    if args.list_scenarios:
        for name, text in SCENARIOS.items():
            print(f"{name:<14} {text}")
        sys.stdout.flush()
        return 0
    cfg = SimConfig(**{k: v for k, v in vars(args).items() if k != "list_scenarios"})
    sim = Simulation(cfg)
    try:
        if cfg.tui:
            from rich.live import Live

            with Live(sim.render(0.0), auto_refresh=False, transient=False) as live:
                sim.live = live
                code = asyncio.run(sim.run())
            sim.live = None
        else:
            code = asyncio.run(sim.run())
        sim.summary()
        return code
    except KeyboardInterrupt:
        print("runcue-sim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
