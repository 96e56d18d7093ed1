"""A decision's UPDATEs on postgres are sent together (one statement) before the next read and at
commit: what they write must be exactly what one statement per update would have written."""

from __future__ import annotations

from runtools.env.base import RunQuery
from runtools.env.postgres import PostgresEnvironment
from runtools.model.run import RunRecord
from runtools.model.status import Stage, State, Status

from .server import postgres_url


def test_many_updates_in_one_decision_the_last_of_each_run_wins_and_reads_see_them():
    with PostgresEnvironment(postgres_url()) as env:
        runs = [RunRecord("line", f"r{i}", 1.0 + i, tags=[f"t{i}"]) for i in range(5)]
        with env.transaction() as tx:
            for r in runs:
                tx.insert(r)
        with env.transaction() as tx:
            for i, r in enumerate(runs):
                r.stage, r.state, r.detail = Stage.RUNNING, State.QUEUED, f"QUEUED {i + 1} of 5"
                tx.update(r)
            runs[0].detail = "changed again"  # updated twice in the decision: the second counts
            tx.update(runs[0])
            seen = {r.instance_id: r.detail for r in tx.find(RunQuery(active=True))}  # a read sends them first
            assert seen["line@r0"] == "changed again" and seen["line@r4"] == "QUEUED 5 of 5"
            assert tx.get("line@r3").detail == "QUEUED 4 of 5"  # type: ignore[union-attr]
            runs[1].stage, runs[1].status, runs[1].ended_at = Stage.ENDED, Status.CANCELLED, 9.0
            runs[1].run_key = "k1"
            for r in runs[2:]:
                r.detail = "after the read"
                tx.update(r)
            tx.update(runs[1])
        stored = {r.instance_id: r for r in env.find_runs(RunQuery())}
        assert stored["line@r0"].detail == "changed again"
        assert [stored[f"line@r{i}"].detail for i in (2, 3, 4)] == ["after the read"] * 3
        assert (stored["line@r1"].status, stored["line@r1"].ended_at, stored["line@r1"].run_key) == (
            Status.CANCELLED, 9.0, "k1")
        assert [r.instance_id for r in env.find_runs(RunQuery(active=True, ascending=True))] == [
            "line@r0", "line@r2", "line@r3", "line@r4"]  # the index columns were written too
        assert [r.run_id for r in env.find_runs(RunQuery(run_key="k1"))] == ["r1"]
        assert stored["line@r3"].tags == ["t3"]
