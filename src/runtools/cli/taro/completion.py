"""taro completion bash|zsh|fish (and `run completion ...`): a shell completion script.

    eval "$(taro completion bash)"        # ~/.bashrc
    eval "$(taro completion zsh)"         # ~/.zshrc (after compinit)
    taro completion fish | source         # ~/.config/fish/config.fish

The script asks `taro completion --complete WORDS... -- CURRENT` for candidates: verbs, the
verb's options and actions, environment names after -e, and job ids from the history after
options and where a verb takes patterns. Job ids come from one indexed query (a skip scan of
the (job_id, created_at) index: one index seek per distinct job id, whatever the history size).
"""

from __future__ import annotations

import os
import sys

SHELLS = ("bash", "zsh", "fish")
HELP = "print a shell completion script: taro completion bash|zsh|fish (eval it in your shell's rc file)"
MAX_JOBS = 500

BASH = r'''# bash completion for taro and run (runtools): eval "$(taro completion bash)"
_runtools_complete() {
    local IFS=$'\n' cur="${COMP_WORDS[COMP_CWORD]}"
    COMPREPLY=($(compgen -W "$(taro completion --complete "${COMP_WORDS[@]:0:COMP_CWORD}" -- "$cur" 2>/dev/null)" \
        -- "$cur"))
}
complete -o default -o nosort -F _runtools_complete taro run
'''

ZSH = r'''#compdef taro run
# zsh completion for taro and run (runtools): eval "$(taro completion zsh)" after compinit
_runtools_complete() {
    local -a cands
    cands=("${(@f)$(taro completion --complete ${words[1,CURRENT-1]} -- "${words[CURRENT]}" 2>/dev/null)}")
    if (( ${#cands} )) && [[ -n ${cands[1]} ]]; then
        compadd -Q -- $cands
    else
        _files
    fi
}
compdef _runtools_complete taro run
'''

FISH = r'''# fish completion for taro and run (runtools): taro completion fish | source
function __runtools_complete
    set -l tokens (commandline -opc)
    set -l cur (commandline -ct)
    set -l found (taro completion --complete $tokens -- "$cur" 2>/dev/null)
    if test (count $found) -gt 0
        printf '%s\n' $found
    else if string match -q -- '*run' $tokens[1]
        __fish_complete_path "$cur"
    end
end
complete -c taro -f -a '(__runtools_complete)'
complete -c run -f -a '(__runtools_complete)'
'''

SCRIPTS = {"bash": BASH, "zsh": ZSH, "fish": FISH}


def configure(p: object) -> None:
    """For --help and the option tables (the verb parses its own argv: run_argv)."""
    p.add_argument("shell", metavar="SHELL", help="bash, zsh or fish")  # type: ignore[attr-defined]


def run_argv(argv: list[str], prog: str = "taro") -> int:
    from runtools.errors import UsageError

    if argv and argv[0] == "--complete":
        words = argv[1:]  # WORDS... -- CURRENT (CURRENT may be empty)
        cur = ""
        if len(words) >= 2 and words[-2] == "--":
            words, cur = words[:-2], words[-1]
        elif words and words[-1] == "--":
            words = words[:-1]
        for c in candidates(words, cur):
            sys.stdout.write(c + "\n")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(f"usage: {prog} completion {{bash,zsh,fish}}\n\n{HELP}\n")
        return 0 if argv else 2
    if argv[0] not in SHELLS or len(argv) > 1:
        raise UsageError(f"{prog} completion takes one shell: bash, zsh or fish (not {' '.join(argv)!r})")
    sys.stdout.write(SCRIPTS[argv[0]])
    return 0


# -- candidates --------------------------------------------------------------------------------------

def candidates(words: list[str], cur: str) -> list[str]:
    """What may come next after `words` (argv[0] first: taro or run), starting with `cur`."""
    try:
        out = _candidates(words, cur)
    except Exception:  # completion never prints an error into the user's command line
        return []
    return [c for c in out if c.startswith(cur)]


def _candidates(words: list[str], cur: str) -> list[str]:
    prog = os.path.basename(words[0]) if words else "taro"
    rest = words[1:]
    if prog == "run":
        if not rest:
            return ["job", "completion"]
        if rest[0] == "completion":
            return list(SHELLS) if len(rest) == 1 else []
        if rest[0] == "job":
            return _run_job(rest[1:], cur)
        return []
    from runtools.cli.taro import VERBS

    if not rest:
        return sorted(v for v in VERBS if v != "hist")
    verb = rest[0]
    if verb == "completion":
        return list(SHELLS) if len(rest) == 1 else []
    if verb not in VERBS:
        return []
    return _verb(verb, rest[1:], cur)


def _run_job(args: list[str], cur: str) -> list[str]:
    from runtools.cli.run import _BY_FLAG, OPTIONS

    i = 0
    while i < len(args):  # past the command's first word: the shell completes files
        a = args[i]
        if a == "--" or not a.startswith("-") or a == "-":
            return []
        opt = _BY_FLAG.get(a.split("=", 1)[0])
        i += 2 if opt is not None and opt[2] != "flag" and "=" not in a else 1
    prev = args[-1] if args else ""
    opt = _BY_FLAG.get(prev)
    if opt is not None and opt[2] != "flag":
        dest = opt[1]
        if dest in ("job_id", "requires", "after"):
            return job_ids(None, cur)
        if dest == "env":
            return env_names()
        return [""] if cur == "" else []  # a free value: nothing to offer
    if cur.startswith("-"):
        return [f for flags, *_ in OPTIONS for f in flags if f.startswith("--")] + ["--"]
    return []


def _verb(verb: str, args: list[str], cur: str) -> list[str]:
    import importlib

    from runtools.cli.fastparse import FastParser
    from runtools.cli.taro import VERBS

    mod = importlib.import_module(f"runtools.cli.taro.{VERBS[verb]}")
    if hasattr(mod, "run_argv"):  # taro exec: run job's options
        return _run_job(args, cur)
    p = FastParser(prog=f"taro {verb}")
    mod.configure(p, verb) if getattr(mod, "MULTI", False) else mod.configure(p)
    options, takes_value, positionals, actions = _describe(p, args)
    if actions is not None:
        return actions
    prev = args[-1] if args else ""
    if prev in takes_value:
        if prev in ("-e", "--env"):
            return env_names()
        return [""] if cur == "" else []
    if cur.startswith("-"):
        return options
    if positionals == "jobs":
        return job_ids(_env_of(args), cur)
    if positionals == "envs" and verb == "env":
        return env_names()
    return []


def _describe(p: object, args: list[str]) -> tuple[list[str], set[str], str | None, list[str] | None]:
    """(long options, options taking a value, takes patterns, subcommand actions still to choose)."""
    real = getattr(p, "_real", None)
    if real is None:
        opts = p._options  # type: ignore[attr-defined]
        kinds = [x["dest"] for x in p._positionals]  # type: ignore[attr-defined]
        return (sorted(f for f in opts if f.startswith("--")),
                {f for f, spec in opts.items() if spec["action"] != "store_true"}, _kind(kinds), None)
    import argparse

    parser = real
    for action in list(parser._actions):
        if isinstance(action, argparse._SubParsersAction):
            chosen = next((a for a in args if a in action.choices), None)
            if chosen is None:
                return [], set(), None, sorted(action.choices)
            parser = action.choices[chosen]
            if getattr(parser, "_real", None) is None and hasattr(parser, "_options"):  # a FastParser
                return _describe(parser, args[args.index(chosen) + 1:])
            break
    longs: list[str] = []
    values: set[str] = set()
    dests = []
    for action in parser._actions:
        if action.option_strings:
            longs += [f for f in action.option_strings if f.startswith("--") and f != "--help"]
            if action.nargs != 0:
                values.update(action.option_strings)
        elif not isinstance(action, argparse._SubParsersAction):
            dests.append(action.dest)
    return sorted(longs), values, _kind(dests), None


def _kind(dests: list[str]) -> str | None:
    """What the positionals complete to: job ids (patterns), environment names, or nothing."""
    if any(d in ("patterns", "args") for d in dests):
        return "jobs"
    if "name" in dests:
        return "envs"
    return None


def _env_of(args: list[str]) -> str | None:
    for i, a in enumerate(args):
        if a in ("-e", "--env") and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--env="):
            return a.split("=", 1)[1]
    return None


def env_names() -> list[str]:
    from runtools.cli.taro.env import known_environments

    return [e["name"] for e in known_environments()]


def job_ids(env_name: str | None, prefix: str = "") -> list[str]:
    """Distinct job ids of the environment's history starting with `prefix` (at most MAX_JOBS)."""
    from runtools.env import open_environment

    neg = prefix.startswith("!")
    prefix = prefix.lstrip("!")
    with open_environment(env_name, create=False) as env:
        db = getattr(env, "db_path", None)
        if db is not None:
            ids = _skip_scan(db, prefix)
        else:  # another backend: the jobs of the newest runs
            from runtools.env.base import RunQuery

            ids = sorted({r.job_id for r in env.find_runs(RunQuery(limit=2000)) if r.job_id.startswith(prefix)})
    return [("!" + j if neg else j) for j in ids[:MAX_JOBS]]


def _skip_scan(db: str, prefix: str) -> list[str]:
    if not os.path.exists(db):
        return []
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
    try:
        rows = conn.execute(
            "WITH RECURSIVE j(id, n) AS ("
            " SELECT (SELECT MIN(job_id) FROM runs WHERE job_id >= ?1), 0"
            " UNION ALL SELECT (SELECT MIN(job_id) FROM runs WHERE job_id > j.id), n + 1 FROM j"
            " WHERE j.id IS NOT NULL AND substr(j.id, 1, length(?1)) = ?1 AND n < ?2)"
            " SELECT id FROM j WHERE id IS NOT NULL AND substr(id, 1, length(?1)) = ?1",
            (prefix, MAX_JOBS)).fetchall()
    finally:
        conn.close()
    return [r[0] for r in rows]
