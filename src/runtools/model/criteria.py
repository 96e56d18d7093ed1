"""Run patterns (DESIGN §5): shell globs on job id, run id, `job@run` or a tag; `!` negates."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from runtools.errors import UsageError
from runtools.model.run import RunRecord


def _check(pattern: str) -> str:
    body = pattern[1:] if pattern.startswith("!") else pattern
    if not body or any(c.isspace() or ord(c) < 32 for c in body) or body.count("@") > 1:
        raise UsageError(
            f"invalid pattern {pattern!r}: use a job id, run id, JOB@RUN or tag, with shell globs (* ? [..]) "
            "and a leading ! to negate"
        )
    if body.count("[") != body.count("]"):
        raise UsageError(f"invalid pattern {pattern!r}: unbalanced [ ]")
    return pattern


@dataclass(frozen=True)
class RunMatcher:
    """Matches runs against patterns: any positive pattern (or none given), and no negative one."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def parse(cls, patterns: list[str] | tuple[str, ...] | str | None) -> RunMatcher:
        if patterns is None:
            return cls()
        if isinstance(patterns, str):
            patterns = [patterns]
        inc, exc = [], []
        for p in patterns:
            _check(p)
            (exc.append(p[1:]) if p.startswith("!") else inc.append(p))
        return cls(tuple(inc), tuple(exc))

    @staticmethod
    def _one(p: str, r: RunRecord) -> bool:
        if "@" in p:
            return fnmatchcase(r.instance_id, p)
        return (
            fnmatchcase(r.job_id, p) or fnmatchcase(r.run_id, p) or any(fnmatchcase(t, p) for t in r.tags)
        )

    def __call__(self, r: RunRecord) -> bool:
        if self.include and not any(self._one(p, r) for p in self.include):
            return False
        return not any(self._one(p, r) for p in self.exclude)

    @property
    def all(self) -> bool:
        return not self.include and not self.exclude


def glob_to_sql(p: str) -> str:
    """fnmatch glob -> SQLite GLOB (only `[!` differs)."""
    return p.replace("[!", "[^")
