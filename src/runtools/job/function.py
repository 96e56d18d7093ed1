"""The function phase: run a Python callable as the run's work (embedding, `runtools.run`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from runtools.job.phase import ExecutionPhase, RunContext
from runtools.model.status import State, Status


class FunctionPhase(ExecutionPhase):
    """Calls `fn(*args, **kwargs)`; an exception fails the run, a stop request is visible to
    the function through `runtools.job.phase.RunContext.stop_status` (cooperative)."""

    name = "function"

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.result: Any = None

    def execute(self, ctx: RunContext) -> tuple[Status, int | None]:
        ctx.run.started_at = time.time()
        ctx.set_state(State.EXECUTING, None, "executing")
        try:
            self.result = self.fn(*self.args, **self.kwargs)
        except Exception as e:
            ctx.run.error = f"{type(e).__name__}: {e}"
            return Status.FAILED, 1
        if ctx.stop_status is not None:
            return ctx.stop_status, None
        return Status.COMPLETED, 0
