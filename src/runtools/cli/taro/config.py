"""taro config show | path | list-disabled: which TOML config file is used, and what is in effect.

Lookup (DESIGN §5, runtools.config): $RUNTOOLS_CONFIG, ./runtools.toml,
$XDG_CONFIG_HOME/runtools/runtools.toml (default ~/.config), /etc/runtools/runtools.toml.
The first file that exists wins. Keys: docs/operations.md.
"""

from __future__ import annotations

import sys

from runtools.cli.views import add_common
from runtools.config import CONFIG_NAME, candidates

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse
    from typing import Any

HELP = "config: show (effective settings and where each came from), path, list-disabled"
__all__ = ["CONFIG_NAME", "config_candidates", "find_config"]


def config_candidates() -> list[str]:
    return candidates()


def find_config() -> str | None:
    from runtools.config import find

    return find()


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(p))
    show = sub.add_parser("show", help="the effective settings, each with the file:line it came from (or default)")
    show.add_argument("--json", action="store_true", help="print JSON: {path, settings: [{key, value, source}]}")
    show.add_argument("--raw", action="store_true", help="print the path and the file's content as it is")
    show.add_argument("--job", metavar="JOB", help="the run job defaults that apply to job id JOB, and from where")
    sub.add_parser("path", help="print the path of the config file in use")
    ld = sub.add_parser("list-disabled", help="list disabled job patterns (same as taro list-disabled)")
    add_common(ld)


def _missing() -> int:
    from runtools.errors import NotFoundError

    looked = ", ".join(config_candidates())
    raise NotFoundError(f"no config file found (looked in {looked}): create one of them")


def run(args: argparse.Namespace) -> int:
    if args.action == "list-disabled":
        from runtools.cli.taro.disable import disabled_list, print_disabled
        from runtools.cli.views import env_of

        with env_of(args) as env:
            print_disabled(disabled_list(env), args.json)
        return 0
    path = find_config()
    if args.action == "path":
        if path is None:
            return _missing()
        sys.stdout.write(path + "\n")
        return 0
    from runtools import config

    if args.raw:
        if path is None:
            return _missing()
        cfg = config.load(path)  # a bad file is one error (file:line: key: why), exit 2
        with open(path, encoding="utf-8") as f:
            text = f.read()
        sys.stdout.write(f"# {path}\n{text}")
        if text and not text.endswith("\n"):
            sys.stdout.write("\n")
        return 0
    cfg = config.load(path)
    if args.job is not None:
        return _show_job(cfg, args.job, args.json)
    from runtools.config_schema import effective

    rows = effective(cfg)
    if args.json:
        from runtools.model.jsonenc import dumps

        sys.stdout.write(dumps({"path": path, "settings": rows}) + "\n")
        return 0
    from runtools.model.jsonenc import dumps as jdumps

    if path:
        sys.stdout.write(f"# config file: {path}\n")
    else:
        sys.stdout.write(f"# no config file (looked in {', '.join(config_candidates())}): defaults\n")
    lines = [(f"{r['key']} = {jdumps(r['value'])}", r["source"]) for r in rows]
    width = min(max((len(a) for a, _ in lines), default=0), 60)
    for a, src in lines:
        sys.stdout.write(f"{a:<{width}}  # {src}\n")
    return 0


def _show_job(cfg: Any, job: str, as_json: bool) -> int:
    """The [jobs."PATTERN"] options that apply to `job`: the first table to set an option wins,
    lists add up; the command line wins over all of them."""
    from runtools.model.ids import validate_id
    from runtools.model.jsonenc import dumps

    validate_id(job, "job id (--job)")
    rows: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}
    for pattern, table in cfg.job_defaults(job):
        for key, value in table.items():
            dest = key.replace("-", "_")
            source = f"{cfg.source('jobs', pattern, key)} [jobs.{dumps(pattern)}]"
            if dest in seen and isinstance(seen[dest]["value"], list):
                extra = [value] if isinstance(value, str) else list(value)
                seen[dest]["value"] = [*seen[dest]["value"], *(v for v in extra if v not in seen[dest]["value"])]
                seen[dest]["source"] = f"{seen[dest]['source']}; {source}"
            elif dest not in seen:
                seen[dest] = {"option": dest, "value": [value] if dest in _LISTS and isinstance(value, str)
                              else value, "source": source}
                rows.append(seen[dest])
    if as_json:
        sys.stdout.write(dumps({"job_id": job, "defaults": rows}) + "\n")
        return 0
    sys.stdout.write(f"# run job defaults for {job} (the command line wins over these)\n")
    if not rows:
        sys.stdout.write("# none: no [jobs.\"PATTERN\"] table matches\n")
    lines = [(f"{r['option']} = {dumps(r['value'])}", str(r["source"])) for r in rows]
    width = min(max((len(a) for a, _ in lines), default=0), 60)
    for a, src in lines:
        sys.stdout.write(f"{a:<{width}}  # {src}\n")
    return 0


_LISTS = ("tag", "output_warn", "requires", "after")
