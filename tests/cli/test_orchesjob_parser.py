"""orchesjob's table-driven argument parser: whatever it accepts, argparse accepts the same
way; everything else (help, version, errors) is argparse's, with the contract's exit 2 and one
line `orchesjob: <message>` on stderr."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from runtools.cli.orchesjob import fast_parse, parser

BIN = Path(sys.executable).parent


def argparse_result(argv: list[str]) -> dict | None:
    try:
        return vars(parser().parse_args(argv))
    except SystemExit:
        return None


ACCEPTED = [
    ["start", "--run-key", "k", "--", "true"],
    ["start", "--run-key", "k", "true", "--sync"],
    ["start", "--run-key=k", "--sync", "--strict", "--start-timeout", "2.5", "--", "sh", "-c", "exit 3"],
    ["start", "--start-timeout=0", "--run-key", "k", "--", "--", "x"],
    ["start", "--run-key", "k", "--", "--sync", "x", "--help"],
    ["start", "--run-key", "k"],
    ["start", "--run-key", "k", "--"],
    ["start", "--run-key", "a", "--run-key", "b", "x"],
    ["start", "--run-key", "k", "", "x"],
    ["start", "--run-key", "k", "-", "x"],
    ["status", "--run-key", "k"],
    ["status", "--run-key", "k", "--all"],
    ["status", "--all", "--job-id", "j"],
    ["status", "--running"],
    ["status", "--running", "--running"],
    ["logs", "--job-id", "j", "--stream", "stderr", "--tail", "10", "-f"],
    ["logs", "--run-key", "k", "--stream=stdout", "--follow", "--tail=0"],
    ["abort", "--run-key", "k", "--reason", "why not", "--grace-seconds", "0.5"],
    ["abort", "--job-id", "j"],
    ["unlock", "--run-key", "k", "--reason", "r", "--ttl", "30m"],
    ["unlock", "--run-key", "k", "--ttl", "bogus"],  # --ttl is checked later, by ops.parse_ttl
    ["rerun", "--run-key", "k", "--sync", "--reason", "again", "--start-timeout", "1"],
    ["rerun", "--job-id", "j"],
    ["clean", "--before", "2026-01-01", "--after", "2025-01-01", "--run-key", "k", "--dry-run"],
    ["clean", "--all"],
    ["clean"],  # the selection rules are checked after parsing
    ["clean", "--job-id", "j", "--all"],
]

LEFT_TO_ARGPARSE = [
    [], ["--version"], ["-h"], ["--help"], ["frobnicate"], ["stat", "--run-key", "k"],
    ["start", "--", "true"],  # --run-key is required
    ["start", "--sync", "true", "--run-key", "k"],  # REMAINDER took --run-key
    ["start", "--run", "k", "--", "x"],  # an abbreviation: argparse resolves it
    ["start", "--run-key"],
    ["start", "--run-key", "-k", "x"],
    ["start", "--run-key", "k", "--start-timeout", "-1", "--", "x"],
    ["start", "--run-key", "k", "--start-timeout", "soon", "--", "x"],
    ["start", "--run-key", "k", "--start-timeout", "nan", "--", "x"],
    ["start", "--run-key", "k", "--sync=yes", "--", "x"],
    ["start", "--run-key", "k", "-5"],
    ["start", "-h"],
    ["status"],
    ["status", "--run-key", "k", "--job-id", "j"],
    ["status", "--run-key", "k", "--running"],
    ["status", "--run-key", "k", "extra"],
    ["status", "--run-key", "k", "--", "--all"],
    ["status", "--run-key", "-x y"],
    ["status", "--run", "k"],
    ["status", "--run-key", "k", "--help"],
    ["logs", "--run-key", "k", "--stream", "both"],
    ["logs", "--run-key", "k", "--tail", "-1"],
    ["logs", "--run-key", "k", "--tail", "x"],
    ["logs", "--run-key", "k", "-fx"],
    ["logs", "--run-key", "k", "-f=1"],
    ["logs", "--running"],
    ["abort", "--grace-seconds", "5"],
    ["abort", "--run-key", "k", "--grace-seconds", "inf"],
    ["abort", "--run-key", "k", "--reason"],
    ["unlock"],
    ["unlock", "--job-id", "j"],
    ["rerun", "--run-key", "k", "--job-id", "j"],
    ["clean", "--bogus"],
    ["clean", "x"],
    ["start", "--run-key", "", "x"],  # empty: argparse's parser names the option (exit 2)
    ["status", "--run-key="],
    ["abort", "--job-id", "j", "--reason", ""],
]


def namespace(argv: list[str]) -> dict | None:
    a = fast_parse(argv)
    return None if a is None else vars(a)


@pytest.mark.parametrize("argv", ACCEPTED, ids=" ".join)
def test_accepted_like_argparse(argv: list[str]) -> None:
    assert namespace(argv) is not None
    assert namespace(argv) == argparse_result(argv)


@pytest.mark.parametrize("argv", LEFT_TO_ARGPARSE, ids=lambda a: " ".join(a) or "(nothing)")
def test_anything_else_goes_to_argparse(argv: list[str]) -> None:
    assert fast_parse(argv) is None


def test_random_command_lines_agree_with_argparse() -> None:
    """Whenever the fast parser accepts a command line, argparse parses it to the same values."""
    words = ["--run-key", "--job-id", "--running", "--all", "--sync", "--strict", "--start-timeout", "--stream",
             "--tail", "-f", "--follow", "--reason", "--grace-seconds", "--ttl", "--before", "--after",
             "--dry-run", "--", "-", "--run", "-h", "--run-key=k", "--tail=3", "--sync=1", "k", "x", "", "1",
             "0.5", "-1", "stdout", "stderr", "nan", "2026-01-01", "-x y"]
    rng = random.Random(4)
    accepted = 0
    for _ in range(6000):
        argv = [rng.choice(["start", "status", "logs", "abort", "unlock", "rerun", "clean"])]
        argv += [rng.choice(words) for _ in range(rng.randint(0, 7))]
        got = namespace(argv)
        if got is not None:
            accepted += 1
            assert got == argparse_result(argv), argv
    assert accepted > 100


def run(*args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "orchesjob"), *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "ORCHESJOB_HOME": str(home)}, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("argv", "message"), [
    (["start", "--", "true"], "the following arguments are required: --run-key"),
    (["start", "--run-key", "k", "--start-timeout", "-1", "--", "x"],
     "argument --start-timeout: invalid number of seconds: '-1'"),
    (["status"], "one of the arguments --run-key --job-id --running is required"),
    (["status", "--run-key", "k", "--job-id", "j"], "argument --job-id: not allowed with argument --run-key"),
    (["status", "--run", "k"], "ambiguous option: --run could match --run-key, --running"),
    (["status", "--run-key", "k", "extra"], "unrecognized arguments: extra"),
    (["logs", "--run-key", "k", "--stream", "both"],
     "argument --stream: invalid choice: 'both' (choose from 'stdout', 'stderr')"),
    (["logs", "--run-key", "k", "--tail", "x"], "argument --tail: invalid line count: 'x'"),
    (["start", "--run-key", "", "--", "x"], "argument --run-key: must not be empty"),
    (["status", "--job-id="], "argument --job-id: must not be empty"),
    (["unlock", "--run-key", "k", "--reason", ""], "argument --reason: must not be empty"),
    (["start", "--run-key", "k", "--", ""], "empty command: the first word after -- is an empty string"),
    (["logs", "--run-key", "k", "--tail", "99999999999999999999"],
     "argument --tail: invalid line count: '99999999999999999999'"),
    (["abort", "--run-key", "k", "--grace-seconds", "1e300"],
     "argument --grace-seconds: invalid number of seconds: '1e300'"),
    (["abort", "--run-key", "k", "--reason"], "argument --reason: expected one argument"),
    (["frobnicate"], "argument subcommand: invalid choice: 'frobnicate' (choose from 'start', 'status', 'logs', "
                     "'abort', 'unlock', 'rerun', 'clean')"),
])
def test_invalid_arguments_exit_2_with_one_line(argv: list[str], message: str, tmp_path: Path) -> None:
    p = run(*argv, home=tmp_path / "home")
    assert (p.returncode, p.stderr, p.stdout) == (2, f"orchesjob: {message}\n", "")
    assert not (tmp_path / "home").exists()  # rejected before touching the state directory


def test_help_and_version_still_work(tmp_path: Path) -> None:
    p = run("--help", home=tmp_path)
    assert p.returncode == 0 and p.stdout.startswith("usage: orchesjob") and "status" in p.stdout
    p = run("status", "--help", home=tmp_path)
    assert p.returncode == 0 and "--run-key RUN_KEY" in p.stdout and "--running" in p.stdout
    p = run("start", "-h", home=tmp_path)
    assert p.returncode == 0 and "--start-timeout SECS" in p.stdout
    p = run("--version", home=tmp_path)
    assert (p.returncode, p.stdout) == (0, "orchesjob 1.1.0 (runtools)\n")
