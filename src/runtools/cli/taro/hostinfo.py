"""taro hostinfo (seed 001): this host, its runtools, the environments it knows (passwords
masked), and the `[hostinfo]` parameters of runtools.toml."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse
    from typing import Any

HELP = "this host: name, OS, Python, runtools version, environments (passwords masked), [hostinfo] parameters"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON: {host, os, python, runtools, config, "
                                                       "default_env, environments, parameters}")


def info() -> dict[str, Any]:
    import platform

    import runtools
    from runtools.cli.taro.env import known_environments
    from runtools.config import load
    from runtools.env import default_env_name
    from runtools.env.local.paths import runtools_home

    cfg = load()
    default = default_env_name()
    source = "$RUNTOOLS_ENV" if os.environ.get("RUNTOOLS_ENV") else cfg.source("defaults", "env")
    return {
        "host": os.environ.get("RUNTOOLS_HOST") or os.uname().nodename,
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        "runtools": runtools.__version__,
        "runtools_home": runtools_home(),
        "config": cfg.path,
        "default_env": {"name": default, "source": source},
        "environments": known_environments(),
        "parameters": dict(cfg.section("hostinfo")),
    }


def run(args: argparse.Namespace) -> int:
    doc = info()
    if args.json:
        from runtools.cli.common import print_json

        print_json(doc)
        return 0
    from runtools.model.text import printable

    w = sys.stdout.write
    for key in ("host", "os", "python", "runtools", "runtools_home"):
        w(f"{key:<14} {printable(str(doc[key]))}\n")
    w(f"{'config':<14} {doc['config'] or '(none)'}\n")
    w(f"{'default env':<14} {doc['default_env']['name']} ({doc['default_env']['source']})\n")
    w("environments\n")
    for e in doc["environments"]:
        w(f"  {e['name']:<18} {e['kind']:<9} {printable(e['location'])}  ({e['source']})\n")
    if not doc["environments"]:
        w("  (none yet)\n")
    if doc["parameters"]:
        w("parameters\n")
        for k, v in doc["parameters"].items():
            w(f"  {k:<18} {printable(str(v))}\n")
    return 0
