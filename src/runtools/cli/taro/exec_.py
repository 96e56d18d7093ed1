"""taro exec: run a command as a job (same as `run job`)."""

from __future__ import annotations

import argparse

HELP = "run a command as a job (same options as `run job`)"


def configure(p: argparse.ArgumentParser) -> None:
    from runtools.cli.run import add_job_options

    add_job_options(p)


def run(args: argparse.Namespace) -> int:
    import sys

    from runtools.cli.run import execute

    rest = sys.argv[2:]
    return execute(args, ["job", *rest])
