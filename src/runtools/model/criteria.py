"""Run patterns (DESIGN §5): shell globs on job id, run id, `job@run` or a tag; `!` negates."""

from __future__ import annotations

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


class RunMatcher:
    """Matches runs against patterns: any positive pattern (or none given), and no negative one."""

    __slots__ = ("exclude", "include")

    def __init__(self, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> None:
        self.include = tuple(include)
        self.exclude = tuple(exclude)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunMatcher) and (self.include, self.exclude) == (other.include, other.exclude)

    def __hash__(self) -> int:
        return hash((self.include, self.exclude))

    def __repr__(self) -> str:
        return f"RunMatcher(include={self.include!r}, exclude={self.exclude!r})"

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
        from fnmatch import fnmatchcase  # only with patterns: fnmatch brings in re

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
