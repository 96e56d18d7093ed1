"""Coordination phases of a run (DESIGN §2, §4), built from a `JobSpec`.

Order, outer to inner: disabled-check (admission) -> run key -> approval / pending gate ->
dependency (`--requires`) and await (`--after`) -> execution queue -> mutual exclusion ->
program. Waits for people and predecessors come before a queue slot is taken; the mutex is
decided at the moment of executing.

Every rule is written once against the environment's `Tx` (one short exclusive
transaction), so it holds on every backend. What a run holds is recorded in its own
`run.coord` inside the transaction that decided it, so other runs see it at once:

    queue_group, max_concurrent   settings of --max-concurrent/--serial/--queue-group
    ticket                        FIFO number taken on entering the queue
    slot                          True once the run holds an execution slot
    excl_group, mutex             --mutual-exclusion group, True once the mutex is held
    latch, approval               gate settings; latch_passed / approval_passed when let through
    requires, after               dependency patterns

A run's holdings end with the run: an ended (or LOST) run is never in `tx.active_runs()`.

This module is imported by every `run job` (for the disabled-check), so it stays small and
imports the phase implementations only when a coordination option is used.
"""

from __future__ import annotations

from runtools.job.phase import AdmissionPhase, Admit
from runtools.model.status import Status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runtools.env.base import Tx
    from runtools.job.phase import Phase
    from runtools.job.spec import JobSpec
    from runtools.model.run import RunRecord

#: settings kind holding disabled job patterns: {pattern: {"by": ..., "at": epoch}}
DISABLED = "disabled"


class DisabledCheck(AdmissionPhase):
    """Ends a run of a disabled job at once: CREATED -> ENDED DISABLED, recorded in history."""

    name = "disabled-check"

    def admit(self, tx: Tx, run: RunRecord) -> Admit | None:
        disabled = tx.settings(DISABLED)
        if not disabled:
            return None
        from runtools.model.criteria import RunMatcher

        for pattern in disabled:
            try:
                matches = RunMatcher.parse(pattern)(run)
            except Exception:
                continue
            if matches:
                from runtools.model.text import shell_quote

                return Admit(
                    end=Status.DISABLED,
                    reason=f"job {run.job_id} is disabled by pattern {pattern!r}: "
                    f"`taro enable {shell_quote(pattern)}` to allow it",
                )
        return None


def phases_for(spec: JobSpec, job_id: str) -> list[Phase]:
    """The coordination phases a spec asks for, outer to inner (DESIGN §4)."""
    out: list[Phase] = []
    if spec.approval or spec.pending:
        from runtools.job.gates import Gate

        if spec.approval:
            out.append(Gate(approval=spec.approval, timeout=spec.pending_timeout))
        if spec.pending:
            out.append(Gate(latch=spec.pending, timeout=spec.pending_timeout))
    if spec.requires or spec.after:
        from runtools.job.dependency import After, Requires

        if spec.requires:
            out.append(Requires(spec.requires))
        if spec.after:
            out.append(After(spec.after, timeout=spec.after_timeout))
    if spec.max_concurrent:
        from runtools.job.exclusion import ExecutionQueue

        out.append(ExecutionQueue(spec.queue_group or job_id, spec.max_concurrent))
    if spec.mutual_exclusion:
        from runtools.job.exclusion import MutualExclusion

        out.append(MutualExclusion(spec.excl_group or job_id))
    return out


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, ... 11th, 12th, 13th, 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
