"""taro output: the whole stored output of a run."""

from __future__ import annotations

import os
import sys

from runtools.cli.views import add_common, add_patterns, env_of

TYPE_CHECKING = False  # argparse only for annotations: taro verbs parse with cli.fastparse
if TYPE_CHECKING:
    import argparse

HELP = "the whole stored output of a run (latest matching)"


def configure(p: argparse.ArgumentParser) -> None:
    add_common(p, json=False)
    add_patterns(p)
    p.add_argument("--stream", choices=["stdout", "stderr", "all"], default="all",
                   help="which stream (default all: stdout to stdout, stderr to stderr)")


def run(args: argparse.Namespace) -> int:
    from runtools.cli.select import latest_run
    from runtools.errors import NotFoundError
    from runtools.output.tail import copy_range

    with env_of(args) as env:
        r = latest_run(env, args.patterns)
        if not r.stdout_path:
            raise NotFoundError(f"run {r.instance_id} stored no output (it ran with --bypass-output)")
        for s, path, out in (("stdout", r.stdout_path, sys.stdout), ("stderr", r.stderr_path, sys.stderr)):
            if args.stream in (s, "all") and path:
                out.flush()
                stored = getattr(env, "stored_output", None)  # a shared environment keeps a bounded copy
                if stored is not None and not os.path.exists(path):  # the run's files are on another host
                    stored(r, s, out.fileno())
                    continue
                copy_range(path, 0, None, out.fileno())
    return 0
