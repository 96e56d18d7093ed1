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
    """Open an environment: `local` (default, or $RUNTOOLS_ENV), `memory`, or a directory path."""
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
    """
    owned = not isinstance(env, Environment)
    environment_ = env if isinstance(env, Environment) else open_environment(env)
    try:
        if callable(target):
            if job_id is None:
                job_id = getattr(target, "__name__", "function").strip("<>") or "function"
            spec = JobSpec(job_id=job_id, terminal=terminal, bypass_output=True, **options)
            phase = FunctionPhase(target, *args)
            result = build_run(environment_, spec, execution=phase).run()
            result.value = phase.result
            return result
        if args:
            raise TypeError("extra positional arguments are only for callables; put them in the command list")
        spec = JobSpec(command=list(target), job_id=job_id, terminal=terminal, **options)
        return build_run(environment_, spec).run()
    finally:
        if owned:
            environment_.close()
