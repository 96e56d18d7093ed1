"""Picking the run(s) a control or output verb acts on."""

from __future__ import annotations

from runtools.env.base import Environment, RunQuery
from runtools.errors import NotFoundError
from runtools.model.criteria import RunMatcher
from runtools.model.run import RunRecord


def latest_run(env: Environment, patterns: list[str]) -> RunRecord:
    """The active run matching (newest), else the newest ended one."""
    matcher = RunMatcher.parse(patterns)
    active = env.active_runs(matcher)
    if active:
        return active[-1]
    runs = env.find_runs(RunQuery(matcher=matcher, limit=1))
    if not runs:
        what = " ".join(patterns) if patterns else "any job"
        raise NotFoundError(f"no run matches {what}: see `taro history`")
    return runs[0]
