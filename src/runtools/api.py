"""The Python API: run jobs in-process, over the same phases and environments as `run job`.

    import runtools

    result = runtools.run(["./backup.sh"], job_id="backup", mutual_exclusion=True)
    result = runtools.run(compute, 42, job_id="compute", env="memory")
    with runtools.environment() as env:
        for r in env.find_runs(runtools.RunQuery(limit=5)): ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from runtools.env import open_environment
from runtools.env.base import Environment
from runtools.job.function import FunctionPhase
from runtools.job.instance import RunResult
from runtools.job.spec import JobSpec, build_run


def environment(name: str | None = None) -> Environment:
    """Open an environment: `local` (default, or $RUNTOOLS_ENV), `memory`, a directory path, or a
    `postgresql://` URL (docs/postgres.md)."""
    return open_environment(name)


def run(
    target: Sequence[str] | Callable[..., Any],
    *args: Any,
    job_id: str | None = None,
    env: str | Environment | None = None,
    terminal: bool = False,
    **options: Any,
) -> RunResult:
    """Run a command (argv list) or a Python callable as a job and wait for its end.

    `options` are the `run job` options as keywords (`JobSpec` fields): tags, timeout,
    mutual_exclusion, max_concurrent, pending, run_key, ... A callable gets `*args`; its
    return value is in `RunResult.value`. Output of commands is stored, and also copied to
    this process's stdout/stderr when `terminal=True`.

    An `async def` function (or a coroutine) is awaited with `asyncio.run`; from code already
    running an event loop, use `await asyncio.to_thread(runtools.run, fn, ...)` (RuntimeError
    otherwise, before any run is created). A generator is run to its end (`value`: the list of
    what it yielded; a stop request ends it at its next `yield`). SystemExit and
    KeyboardInterrupt inside the callable end the run (COMPLETED/FAILED by the exit code;
    INTERRUPTED) and are re-raised once that is recorded; SIGINT (SIGTERM, SIGHUP) to this
    process ends the run INTERRUPTED and then raises KeyboardInterrupt (SystemExit(128+N)).
    """
    if not isinstance(target, (list, tuple)):  # a command list needs none of this (inspect: ~10 ms to import)
        import inspect

        from runtools.job.function import ASYNC_IN_LOOP, is_async, running_loop

        if is_async(target) and running_loop():
            if inspect.iscoroutine(target):
                target.close()  # never awaited: no "coroutine was never awaited" warning
            raise RuntimeError(ASYNC_IN_LOOP)
        if inspect.iscoroutine(target):  # runtools.run(main()): await it, as asyncio.run would
            if args:
                target.close()
                raise TypeError("extra positional arguments are only for callables, not for a coroutine")
            if job_id is None:
                job_id = getattr(target, "__name__", None)
            target = _returning(target)
    owned = not isinstance(env, Environment)
    environment_ = env if isinstance(env, Environment) else open_environment(env)
    try:
        if callable(target):
            if job_id is None:
                job_id = getattr(target, "__name__", "function").strip("<>") or "function"
            spec = JobSpec(job_id=job_id, terminal=terminal, bypass_output=True, **options)
            phase = FunctionPhase(target, *args)
            job = build_run(environment_, spec, execution=phase)
            result = job.run()
            result.value = phase.result
        else:
            if args:
                raise TypeError("extra positional arguments are only for callables; put them in the command list")
            spec = JobSpec(command=list(target), job_id=job_id, terminal=terminal, **options)
            job = build_run(environment_, spec)
            result = job.run()
        if job.signalled is not None:  # recorded INTERRUPTED: now the caller gets the interrupt
            if job.signalled == 2:
                raise KeyboardInterrupt
            raise SystemExit(128 + job.signalled)
        return result
    finally:
        if owned:
            environment_.close()


def _returning(value: Any) -> Callable[[], Any]:
    return lambda: value
