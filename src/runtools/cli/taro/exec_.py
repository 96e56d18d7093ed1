"""taro exec: run a command as a job (same as `run job`)."""

from __future__ import annotations

HELP = "run a command as a job (same options as `run job`)"


def run_argv(argv: list[str]) -> int:
    """Parsed by `run job`'s own parser, so options and help are the same."""
    from runtools.cli.run import execute, parse_args

    return execute(parse_args(argv, prog="taro exec"), ["exec", *argv])
