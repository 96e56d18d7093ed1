"""`taro`: the ops CLI. One module per verb, imported only when that verb runs.

Each verb module provides `HELP` (one line), `configure(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import importlib
import sys

from runtools.cli.common import check_environment, guard_stdio, run_main
from runtools.cli.fastparse import FastParser
from runtools.errors import UsageError

VERBS = {
    "ps": "ps",
    "history": "history",
    "hist": "history",
    "tail": "tail",
    "output": "output",
    "stop": "stop",
    "wait": "wait",
    "listen": "listen",
    "stats": "stats",
    "exec": "exec_",
    # coordination
    "release": "gates",
    "approve": "gates",
    "resume": "gates",
    "deny": "gates",
    "disable": "disable",
    "enable": "disable",
    "list-disabled": "disable",
    "config": "config",
    "env": "env",
    # start-once
    "unlock": "unlock",
    # shared rate/concurrency limits (issue 12)
    "service": "service",
    # many hosts
    "serve": "serve",
    # operator comfort (issue 11)
    "clean": "clean",
    "log": "log",
    "plugins": "plugins",
    "dash": "dash",
    "hostinfo": "hostinfo",
    "completion": "completion",
}


def usage() -> str:
    lines = ["usage: taro VERB [OPTIONS] [PATTERN...]", "", "verbs:"]
    seen = set()
    for verb, mod in VERBS.items():
        if mod in seen and verb in ("hist",):
            continue
        try:
            m = importlib.import_module(f"runtools.cli.taro.{mod}")
        except ImportError:
            continue
        seen.add(mod)
        helps = getattr(m, "HELPS", {})
        lines.append(f"  {verb:<14} {helps.get(verb, getattr(m, 'HELP', ''))}")
    lines += ["", "  taro -H TARGET[,TARGET] [--host-timeout DUR] VERB ...   the verb on many hosts (docs/serve.md)",
              "", "Run `taro VERB --help` for a verb's options. Exit codes: see README."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    guard_stdio()  # before anything opens a file: a closed fd 1 must not become the database
    argv = sys.argv[1:] if argv is None else argv

    def go() -> int:
        if not argv or argv[0] in ("-h", "--help", "help"):
            sys.stdout.write(usage())
            return 0 if argv else 2
        if argv[0] in ("-H", "--host") or argv[0].startswith(("-H", "--host=", "--host-timeout")):
            from runtools.remote.fanout import main as on_hosts  # taro -H TARGET VERB ...: docs/serve.md

            return on_hosts(argv, lambda verb, rest: parse(verb, importlib.import_module(
                f"runtools.cli.taro.{VERBS[verb]}"), rest))
        verb = argv[0]
        mod_name = VERBS.get(verb)
        if mod_name is None:
            raise UsageError(f"unknown verb {verb!r}: run `taro --help` for the list")
        try:
            mod = importlib.import_module(f"runtools.cli.taro.{mod_name}")
        except ModuleNotFoundError as e:
            if e.name == f"runtools.cli.taro.{mod_name}":
                raise UsageError(f"verb {verb!r} is not available in this build") from None
            raise
        if hasattr(mod, "run_argv"):  # verbs that parse their own options (exec)
            check_environment("RUNTOOLS_ENV", "RUNTOOLS_HOME")
            return mod.run_argv(argv[1:])
        args = parse(verb, mod, argv[1:])
        check_environment("RUNTOOLS_ENV", "RUNTOOLS_HOME")
        return mod.run(args)

    def parse(verb, mod, rest):
        p = FastParser(prog=f"taro {verb}", description=getattr(mod, "HELPS", {}).get(verb, getattr(mod, "HELP", "")))
        mod.configure(p, verb) if getattr(mod, "MULTI", False) else mod.configure(p)
        args = p.parse_args(rest)
        args.verb = verb
        return args

    run_main("taro", go)
