"""A job run described as data (`JobSpec`), turned into phases in the order of DESIGN §4.

The CLI (`run job`, `taro exec`) and the Python API both build runs through `build_run`, so
an option means the same thing everywhere.
"""

from __future__ import annotations

from runtools.job.instance import JobRun
from runtools.job.program import ProgramPhase
from runtools.model.ids import job_id_from_command

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runtools.env.base import Environment
    from runtools.job.phase import AdmissionPhase, ExecutionPhase, Phase


_SPEC_DEFAULTS: dict[str, object] = {
    "command": list,
    "job_id": None,
    "run_id": None,
    "tags": list,
    "bypass_output": False,
    "timeout": None,
    "kill_after": 10.0,
    "time_warn": None,
    "output_warn": list,
    "terminal": True,
    "output_limit": None,  # bytes stored per stream (0: no limit; None: $RUNTOOLS_OUTPUT_LIMIT or 1 GiB)
    # coordination (DESIGN §4)
    "mutual_exclusion": False,
    "excl_group": None,
    "max_concurrent": None,
    "queue_group": None,
    "pending": None,
    "approval": None,
    "pending_timeout": None,
    "requires": list,
    "after": list,
    "after_timeout": None,
    "services": list,  # --service NAME (repeatable): shared rate/concurrency limits (job.service)
    # start-once
    "run_key": None,
    "strict": False,
    "extra": dict,
    "output_paths": None,
}


class JobSpec:
    """Options of one run; any field of `_SPEC_DEFAULTS` may be given as a keyword."""

    __slots__ = tuple(_SPEC_DEFAULTS)

    command: list[str]
    job_id: str | None
    run_id: str | None
    tags: list[str]
    bypass_output: bool
    timeout: float | None
    kill_after: float
    time_warn: float | None
    output_warn: list[str]
    terminal: bool
    output_limit: int | None
    mutual_exclusion: bool
    excl_group: str | None
    max_concurrent: int | None
    queue_group: str | None
    pending: str | None
    approval: str | None
    pending_timeout: float | None
    requires: list[str]
    after: list[str]
    after_timeout: float | None
    services: list[str]
    run_key: str | None
    strict: bool
    extra: dict[str, Any]
    output_paths: tuple[str, str] | None

    def __init__(self, **kw: Any) -> None:
        for name, default in _SPEC_DEFAULTS.items():
            setattr(self, name, kw.pop(name) if name in kw else default() if callable(default) else default)
        if kw:
            raise TypeError(f"unknown job options: {', '.join(kw)}")

    def __repr__(self) -> str:
        return "JobSpec(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in _SPEC_DEFAULTS) + ")"

    @property
    def resolved_job_id(self) -> str:
        return self.job_id or job_id_from_command(self.command)


def admission_phases(spec: JobSpec) -> list[AdmissionPhase]:
    """Phases decided in the creating transaction: disabled-check, then the run-key claim."""
    out: list[AdmissionPhase] = []
    from runtools.job.coordination import DisabledCheck

    out.append(DisabledCheck())
    if spec.run_key is not None:
        from runtools.job.runkey import RunKeyClaim

        out.append(RunKeyClaim(spec.run_key, strict=spec.strict))
    return out


def coordination_phases(spec: JobSpec, job_id: str) -> list[Phase]:
    """approval -> dependency/await -> queue -> mutex -> service (outer to inner)."""
    wants = (
        spec.pending or spec.approval or spec.requires or spec.after or spec.max_concurrent or spec.mutual_exclusion
    )
    out: list[Phase] = []
    if wants:
        from runtools.job.coordination import phases_for

        out = phases_for(spec, job_id)
    if spec.services:
        from runtools.job.service import ServiceAdmission

        out.append(ServiceAdmission(spec.services))
    return out


def build_run(env: Environment, spec: JobSpec, execution: ExecutionPhase | None = None, **kw: Any) -> JobRun:
    job_id = spec.resolved_job_id
    if execution is None:
        execution = ProgramPhase(
            spec.command,
            bypass_output=spec.bypass_output,
            timeout=spec.timeout,
            kill_after=spec.kill_after,
            time_warn=spec.time_warn,
            output_warn=spec.output_warn,
            terminal=spec.terminal,
            output_limit=spec.output_limit,
        )
    return JobRun(
        env,
        job_id,
        execution,
        phases=coordination_phases(spec, job_id),
        admission=admission_phases(spec),
        run_id=spec.run_id,
        tags=spec.tags,
        command=list(spec.command) if spec.command else None,
        run_key=spec.run_key,
        store_output=not spec.bypass_output,
        extra=spec.extra,
        output_paths=spec.output_paths,
        **kw,
    )
