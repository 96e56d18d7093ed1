"""Scheduling: limits, rate windows, readiness rechecks, and cost independent of queue length."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import runcue
from runcue.models import WorkState, WorkUnit
from runtools.cue.rates import RateWindow, parse_rate

from ._helpers import Gate, run, until


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("60/min", (60, 60.0)),
        ("5/s", (5, 1.0)),
        ("5 / SEC", (5, 1.0)),
        ("1/second", (1, 1.0)),
        ("3/m", (3, 60.0)),
        ("3/Minute", (3, 60.0)),
        ("100/h", (100, 3600.0)),
        ("100/hr", (100, 3600.0)),
        ("100/HOUR", (100, 3600.0)),
    ],
)
def test_parse_rate_units(text: str, expected: tuple[int, float]) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["", "60", "60/day", "x/min", "0/min", "-1/s", "1.5/s", "60/min/extra"])
def test_parse_rate_rejects_and_names_bad_strings(text: str) -> None:
    with pytest.raises(ValueError, match=r"^(Invalid rate format|Unknown rate unit): ") as e:  # the original's words
        parse_rate(text)
    assert text in str(e.value)


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(1, 5),
    gaps=st.lists(st.floats(0.0, 0.7, allow_nan=False), min_size=1, max_size=60),
)
def test_rate_window_never_exceeds_limit_in_any_window(count: int, gaps: list[float]) -> None:
    window = RateWindow(count, 1.0)
    now, starts = 0.0, []
    for gap in gaps:
        now += gap
        if window.available(now):
            window.record(now)
            starts.append(now)
        else:
            assert window.next_free(now) > now
    for i, t in enumerate(starts):
        assert sum(1 for s in starts[i:] if s < t + 1.0) <= count


def test_concurrency_limit_is_honoured() -> None:
    async def main() -> int:
        active = peak = 0
        async with runcue.Cue() as cue:
            cue.service("three", concurrent=3)

            @cue.task("t", uses="three")
            async def t(work: WorkUnit) -> None:
                nonlocal active, peak
                active += 1
                peak = max(peak, active)
                await asyncio.sleep(0.002)
                active -= 1

            for _ in range(30):
                await cue.submit("t")
        return peak

    assert run(main()) == 3


def test_rate_limit_bursts_then_waits_for_the_window() -> None:
    async def main() -> list[float]:
        async with runcue.Cue() as cue:
            cue.service("api", rate="4/s")

            @cue.task("call", uses="api")
            def call(work: WorkUnit) -> None:
                return None

            for _ in range(6):
                await cue.submit("call")
        starts = sorted(w.started_at for w in await cue.list() if w.started_at is not None)
        return [s - starts[0] for s in starts]

    starts = run(main())
    assert len(starts) == 6
    assert starts[3] < 0.5  # the full count bursts at once
    slack = 0.002  # started_at is wall-clock, the window runs on the loop's monotonic clock
    assert starts[4] >= starts[0] + 1.0 - slack and starts[5] >= starts[1] + 1.0 - slack
    for i, t in enumerate(starts):
        assert sum(1 for s in starts[i:] if s < t + 1.0 - slack) <= 4


def test_outside_change_is_noticed_within_100ms(tmp_path: Path) -> None:
    marker = tmp_path / "input.txt"

    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = asyncio.Event()
        created_at: list[float] = []
        async with runcue.Cue() as cue:

            @cue.task("consume")
            async def consume(work: WorkUnit) -> None:
                started.set()

            cue.is_ready(lambda work: marker.exists())
            await cue.submit("consume")
            await until(lambda: [b["reason"] for b in cue.debug_blocked()] == ["not_ready"])

            def outside() -> None:  # another program writes the input
                marker.write_text("x")
                created_at.append(loop.time())

            thread = threading.Thread(target=outside)
            thread.start()
            await asyncio.wait_for(started.wait(), 2)
            noticed = loop.time()
            thread.join()
        return noticed - created_at[0]

    assert run(main()) < 0.1


def test_is_ready_is_asked_only_for_work_that_could_run() -> None:
    """20,000 items behind a full service cost nothing while 500 others run elsewhere."""

    async def main() -> dict[str, int]:
        calls = {"blocked": 0, "fast": 0, "probe": 0, "blocker": 0}
        gate = Gate()
        async with runcue.Cue() as cue:
            cue.service("full", concurrent=1)
            cue.service("free", concurrent=50)

            @cue.task("blocker", uses="full")
            async def blocker(work: WorkUnit) -> None:
                await gate.wait()

            @cue.task("blocked", uses="full")
            async def blocked(work: WorkUnit) -> None:
                return None

            @cue.task("fast", uses="free")
            async def fast(work: WorkUnit) -> None:
                return None

            @cue.task("probe", uses="free")
            async def probe(work: WorkUnit) -> None:
                return None

            @cue.is_ready
            def is_ready(work: WorkUnit) -> bool:
                calls[work.task] += 1
                return work.task != "probe"

            await cue.submit("blocker")
            await until(lambda: gate.arrived == 1)
            for _ in range(20_000):
                await cue.submit("blocked")
            probe_id = await cue.submit("probe")
            for _ in range(500):
                await cue.submit("fast")
            await until(lambda: calls["probe"] >= 4)  # several recheck rounds have passed
            snapshot = dict(calls)
            await cue.cancel(probe_id)
            gate.open()
        return snapshot

    calls = run(main(), timeout=30)
    assert calls["blocked"] == 0
    assert calls["fast"] == 500
    assert calls["blocker"] == 1


def test_work_waiting_for_a_predecessor_starts_when_it_completes() -> None:
    async def main() -> None:
        artifacts: set[str] = set()
        order: list[str] = []
        async with runcue.Cue() as cue:
            cue.service("local", concurrent=2)

            @cue.task("extract", uses="local")
            async def extract(work: WorkUnit) -> None:
                order.append(f"extract:{work.params['k']}")
                artifacts.add(f"raw:{work.params['k']}")

            @cue.task("transform", uses="local")
            def transform(work: WorkUnit) -> None:
                order.append(f"transform:{work.params['k']}")

            cue.is_ready(lambda w: w.task == "extract" or f"raw:{w.params['k']}" in artifacts)
            for k in range(5):
                await cue.submit("transform", params={"k": k})
            for k in range(5):
                await cue.submit("extract", params={"k": k})
        for k in range(5):
            assert order.index(f"extract:{k}") < order.index(f"transform:{k}")
        assert all(w.state is WorkState.COMPLETED for w in await cue.list())

    run(main())


@settings(max_examples=25, deadline=None)
@given(
    limits=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    plan=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), st.booleans()), min_size=1, max_size=40),
)
def test_any_mix_of_work_respects_limits_and_ends(limits: list[int], plan: list[tuple[int, int, bool]]) -> None:
    """Random services, yields and failures: never above a limit, every work unit ends."""

    async def main() -> None:
        active = dict.fromkeys(range(len(limits)), 0)
        peak = dict.fromkeys(range(len(limits)), 0)
        async with runcue.Cue(retry_delay=0.001) as cue:
            for i, limit in enumerate(limits):
                cue.service(f"s{i}", concurrent=limit)

                @cue.task(f"t{i}", uses=f"s{i}", retry=2)
                async def handler(work: WorkUnit, i: int = i) -> None:
                    active[i] += 1
                    peak[i] = max(peak[i], active[i])
                    try:
                        for _ in range(work.params["yields"]):
                            await asyncio.sleep(0)
                        if work.params["fail"]:
                            raise RuntimeError("planned")
                    finally:
                        active[i] -= 1

            for svc, yields, fail in plan:
                await cue.submit(f"t{svc % len(limits)}", params={"yields": yields, "fail": fail})
        works = await cue.list(limit=1000)
        assert len(works) == len(plan)
        for work, (_, _, fail) in zip(works, plan, strict=True):
            assert work.state is (WorkState.FAILED if fail else WorkState.COMPLETED)
            assert work.attempt == (2 if fail else 1)
        assert all(peak[i] <= limits[i] for i in peak)

    run(main())


def test_redefining_a_service_changes_its_limits() -> None:
    async def main() -> int:
        active = peak = 0
        async with runcue.Cue() as cue:
            cue.service("s", concurrent=1)
            cue.service("s", concurrent=3)

            @cue.task("t", uses="s")
            async def t(work: WorkUnit) -> None:
                nonlocal active, peak
                active += 1
                peak = max(peak, active)
                await asyncio.sleep(0.001)
                active -= 1

            for _ in range(12):
                await cue.submit("t")
        return peak

    assert run(main()) == 3
