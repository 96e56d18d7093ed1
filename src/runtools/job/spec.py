"""A job run described as data (`JobSpec`), turned into phases in the order of DESIGN §4.

The CLI (`run job`, `taro exec`) and the Python API both build runs through `build_run`, so
an option means the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runtools.job.instance import JobRun
from runtools.job.phase import AdmissionPhase, ExecutionPhase, Phase
from runtools.job.program import ProgramPhase
from runtools.model.ids import job_id_from_command

if TYPE_CHECKING:
    from runtools.env.base import Environment


@dataclass
class JobSpec:
    command: list[str] = field(default_factory=list)
    job_id: str | None = None
    run_id: str | None = None
    tags: list[str] = field(default_factory=list)
    bypass_output: bool = False
    timeout: float | None = None
    kill_after: float = 10.0
    time_warn: float | None = None
    output_warn: list[str] = field(default_factory=list)
    terminal: bool = True
    # coordination (DESIGN §4)
    mutual_exclusion: bool = False
    excl_group: str | None = None
    max_concurrent: int | None = None
    queue_group: str | None = None
    pending: str | None = None
    approval: str | None = None
    pending_timeout: float | None = None
    requires: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    after_timeout: float | None = None
    # start-once
    run_key: str | None = None
    strict: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    output_paths: tuple[str, str] | None = None

    @property
    def resolved_job_id(self) -> str:
        return self.job_id or job_id_from_command(self.command)


def admission_phases(spec: JobSpec) -> list[AdmissionPhase]:
    """Phases decided in the creating transaction: disabled-check, then the run-key claim."""
    out: list[AdmissionPhase] = []
    try:
        from runtools.job.coordination import DisabledCheck
    except ImportError:
        DisabledCheck = None  # noqa: N806
    if DisabledCheck is not None:
        out.append(DisabledCheck())
    if spec.run_key is not None:
        from runtools.job.runkey import RunKeyClaim

        out.append(RunKeyClaim(spec.run_key, strict=spec.strict))
    return out


def coordination_phases(spec: JobSpec, job_id: str) -> list[Phase]:
    """approval -> dependency/await -> queue -> mutex (outer to inner)."""
    wants = (
        spec.pending or spec.approval or spec.requires or spec.after or spec.max_concurrent or spec.mutual_exclusion
    )
    if not wants:
        return []
    from runtools.job.coordination import phases_for

    return phases_for(spec, job_id)


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
