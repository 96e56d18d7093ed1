"""runcue keeps the original's error behaviour that its users (and its own tests) rely on: the
exception type, and messages that start with the original's words before saying more."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

import runcue
from runcue.models import WorkState, WorkUnit
from runtools.cue.rates import parse_rate

from ._helpers import run, until

ORIGINAL_RATE_WORDS = ("Invalid rate format: ", "Unknown rate unit: ")


def test_submit_unknown_task_raises_value_error_with_the_original_words() -> None:
    async def main() -> None:
        async with runcue.Cue() as cue:
            with pytest.raises(ValueError) as e:
                await cue.submit("unknown")
            assert str(e.value).startswith("Unknown task: unknown")
            assert "@cue.task('unknown'" in str(e.value)  # then says how to fix it
            assert await cue.list() == [] and cue.debug_blocked() == []

    run(main())


def test_unknown_service_and_rate_texts() -> None:
    cue = runcue.Cue()
    with pytest.raises(ValueError, match=r"^Unknown service: db\. "):
        cue.task("t", uses="db")
    with pytest.raises(ValueError, match=r"^Invalid rate format: 60 per minute\. "):
        cue.service("s", rate="60 per minute")
    with pytest.raises(ValueError, match=r"^Unknown rate unit: day .*'60/day'"):
        cue.service("s", rate="60/day")
    assert "s" not in cue._services  # nothing half-declared


@given(st.text(max_size=20))
def test_every_rejected_rate_starts_with_the_original_words(text: str) -> None:
    try:
        parse_rate(text)
    except ValueError as e:
        assert str(e).startswith(ORIGINAL_RATE_WORDS), str(e)
        assert text in str(e)


def test_pending_timeout_error_text() -> None:
    async def main() -> tuple[list[BaseException], WorkUnit | None]:
        failures: list[BaseException] = []
        async with runcue.Cue(pending_timeout=0.05) as cue:

            @cue.task("blocked_task")
            def blocked(work: WorkUnit) -> None:
                return None

            cue.is_ready(lambda work: False)
            cue.on_failure(lambda work, error: failures.append(error))
            wid = await cue.submit("blocked_task")
            await until(lambda: bool(failures))
            return failures, await cue.get(wid)

    failures, work = run(main())
    assert len(failures) == 1 and isinstance(failures[0], TimeoutError)
    assert str(failures[0]).startswith("Pending timeout: waited ")
    assert "(limit: 0.05s)" in str(failures[0])
    assert work is not None and work.state is WorkState.FAILED and work.error == str(failures[0])


def test_stall_timeout_error_text() -> None:
    async def main() -> list[BaseException]:
        failures: list[BaseException] = []
        async with runcue.Cue(stall_timeout=0.05) as cue:

            @cue.task("blocked")
            def blocked(work: WorkUnit) -> None:
                return None

            cue.is_ready(lambda work: False)
            cue.on_failure(lambda work, error: failures.append(error))
            for i in range(3):
                await cue.submit("blocked", params={"id": i})
            await until(lambda: len(failures) == 3)
            await asyncio.sleep(0)
        return failures

    failures = run(main())
    assert all(isinstance(e, TimeoutError) and str(e).startswith("Stall timeout: no progress for ") for e in failures)
