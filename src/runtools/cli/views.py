"""Shared pieces of the taro read verbs: options, environment, formatting of runs."""

from __future__ import annotations

from runtools.cli.common import add_env

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

    from runtools.env.base import Environment
    from runtools.model.run import RunRecord


def add_patterns(p: argparse.ArgumentParser, nargs: str = "*") -> None:
    p.add_argument("patterns", nargs=nargs, metavar="PATTERN",
                   help="job id, run id, JOB@RUN or tag; shell globs; ! negates")


def add_common(p: argparse.ArgumentParser, json: bool = True) -> None:
    add_env(p)
    if json:
        p.add_argument("--json", action="store_true", help="print JSON (documented keys, see docs/json.md)")


def env_of(args: argparse.Namespace, create_default: bool = False) -> Environment:
    """The environment of a taro verb, opened without creating anything: one that does not exist
    is an error (exit 3), except the default `local`, which reads as empty before its first run
    (or, with `create_default`, is created by the verb's write, as `taro disable` does)."""
    from runtools.env import DEFAULT_ENV, default_env_name, open_environment

    create = create_default and (args.env or default_env_name()) == DEFAULT_ENV
    return open_environment(args.env, create=create)


def state_text(r: RunRecord) -> str:
    if not r.active:
        return r.status.value if r.status else ""
    if r.detail:
        return r.detail
    return r.state.value if r.state else r.stage.value


def status_text(r: RunRecord) -> str:
    from runtools.output.progress import format_progress

    parts = []
    prog = format_progress(r.progress)
    if prog:
        parts.append(prog)
    if r.warnings:
        parts.append(f"⚠ {r.warnings[-1]}" + (f" (+{len(r.warnings) - 1})" if len(r.warnings) > 1 else ""))
    if not r.active and r.error:
        parts.append(r.error)
    for a in r.actions:  # who released, approved, stopped ... (denials already say it in `error`)
        text = f"{a.get('action')} by {a.get('by') or 'unknown'}"
        if a.get("reason"):
            text += f": {a['reason']}"
        if not any(text in p for p in parts):
            parts.append(text)
    return "  ".join(parts)
