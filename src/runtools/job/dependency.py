"""Dependencies on other runs: `--requires PATTERN` and `--after PATTERN [--after-timeout DUR]`.

`--requires`: execute only if, for each pattern, a run matching it is active right now
(any state); otherwise end UNSATISFIED.

`--after`: wait WAITING while a matching run that is ahead of this one is active (created
before it, or already executing; a later run that is itself still waiting does not hold this
one back, so two runs waiting `--after` each other cannot deadlock). Then, for each pattern,
execute if the most recent ended matching run succeeded (outcome SUCCESS), end UNSATISFIED if
it did not. A pattern with nothing to wait for (no run matches it, or only this run and runs
behind it) holds nothing back: the run executes. `--after-timeout` bounds the wait for the runs
ahead (TIMEOUT).
"""

from __future__ import annotations

from runtools.job.phase import Phase, PhaseEnd, RunContext
from runtools.model.criteria import RunMatcher
from runtools.model.events import Event
from runtools.model.status import Outcome, Stage, State, Status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runtools.env.base import Tx
    from runtools.model.run import RunRecord


def _names(runs: list[RunRecord], limit: int = 3) -> str:
    ids = [r.instance_id for r in runs[:limit]]
    more = f" and {len(runs) - limit} more" if len(runs) > limit else ""
    return ", ".join(ids) + more


class Requires(Phase):
    """Ends the run UNSATISFIED unless each pattern matches an active run."""

    name = "requires"

    def __init__(self, patterns: list[str]) -> None:
        self.patterns = list(patterns)
        self.matchers = [RunMatcher.parse(p) for p in self.patterns]
        self.coord: dict[str, Any] = {"requires": list(self.patterns)}

    def run(self, ctx: RunContext) -> None:
        me = ctx.run.instance_id
        with ctx.env.transaction() as tx:
            active = [r for r in tx.active_runs() if r.instance_id != me]
        for p, m in zip(self.patterns, self.matchers, strict=True):
            if not any(m(r) for r in active):
                raise PhaseEnd(Status.UNSATISFIED, f"requires an active run of {p}: none is active")


class After(Phase):
    """Waits WAITING for matching runs ahead of this one to end; needs the latest to have succeeded."""

    name = "after"

    def __init__(self, patterns: list[str], timeout: float | None = None) -> None:
        self.patterns = list(patterns)
        self.matchers = [RunMatcher.parse(p) for p in self.patterns]
        self.timeout = timeout
        self.coord: dict[str, Any] = {"after": list(self.patterns)}
        if timeout is not None:
            self.coord["after_timeout_s"] = timeout

    def _match(self, r: RunRecord) -> bool:
        return any(m(r) for m in self.matchers)

    def run(self, ctx: RunContext) -> None:
        me = ctx.run.instance_id

        def relevant(ev: Event) -> bool:
            r = ev.run
            return r.instance_id != me and (not r.active or ev.event in ("created", "executing")) and self._match(r)

        result = ctx.wait_for(lambda tx: self._decide(tx, ctx), timeout=self.timeout, watch=relevant)
        if result is None:
            from runtools.model.durations import human_duration

            raise PhaseEnd(
                Status.TIMEOUT,
                f"the runs of {' '.join(self.patterns)} ahead did not end within {human_duration(self.timeout)} "
                "(--after-timeout)",
            )
        if result is not True:
            raise PhaseEnd(Status.UNSATISFIED, result)

    def _decide(self, tx: Tx, ctx: RunContext) -> bool | str | None:
        from runtools.env.base import RunQuery

        run = ctx.run
        me = (run.created_at, run.run_id)
        blocking = [
            r
            for r in tx.active_runs()
            if r.instance_id != run.instance_id
            and self._match(r)
            and ((r.created_at, r.run_id) < me or r.started_at is not None)
        ]
        if blocking:
            self._waiting(tx, ctx, f"WAITING for {_names(blocking)} to end")
            ctx.watch_leases(blocking)
            return None
        for p, m in zip(self.patterns, self.matchers, strict=True):
            last = tx.find(RunQuery(matcher=m, active=False, limit=1))
            if not last:
                continue  # no run of it ever ended and none is ahead: nothing to wait for
            r = last[0]
            if r.status is None or r.status.outcome is not Outcome.SUCCESS:
                return f"after {p}: its latest run {r.instance_id} ended {r.status}"
        return True

    @staticmethod
    def _waiting(tx: Tx, ctx: RunContext, detail: str) -> None:
        run = ctx.run
        if run.state is State.WAITING and run.detail == detail:
            return
        was_waiting = run.state is State.WAITING
        run.stage, run.state, run.detail = Stage.RUNNING, State.WAITING, detail
        tx.update(run)
        if not was_waiting:
            tx.publish_after_commit(Event("waiting", run.copy(), detail={"after": ctx.run.coord.get("after")}))
