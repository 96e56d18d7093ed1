"""Shell completion: taro completion bash|zsh|fish and run completion ...; the candidates (verbs,
options, actions, environments, job ids from history) and the scripts in a real bash."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def complete(cli, *words: str, cur: str = "") -> list[str]:
    p = cli.taro("completion", "--complete", *words, "--", cur)
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()


def test_candidates(cli):
    for job in ("backup-db", "backup-web", "report"):
        assert cli.run("--id", job, "--", "true").returncode == 0
    assert "hostinfo" in complete(cli, "taro", cur="h") and "history" in complete(cli, "taro", cur="h")
    assert complete(cli, "taro", "ps", cur="back") == ["backup-db", "backup-web"]
    assert complete(cli, "taro", "stop", cur="!rep") == ["!report"]
    assert "--json" in complete(cli, "taro", "history", cur="--")
    assert complete(cli, "taro", "config", cur="") == ["list-disabled", "path", "show"]
    assert complete(cli, "taro", "config", "show", cur="--") == ["--job", "--json", "--raw"]
    assert complete(cli, "taro", "ps", "-e", cur="lo") == ["local"]
    assert complete(cli, "run", cur="") == ["job", "completion"]
    assert "--mutual-exclusion" in complete(cli, "run", "job", cur="--mu")
    assert complete(cli, "run", "job", "--id", cur="backup-w") == ["backup-web"]
    assert complete(cli, "run", "job", "--id", "x", "ls", cur="") == []  # the command: the shell's files
    assert complete(cli, "taro", "completion", cur="z") == ["zsh"]


def test_scripts_and_usage_errors(cli):
    for shell in ("bash", "zsh", "fish"):
        for prog in ("taro", "run"):
            p = cli.exec([prog, "completion", shell])
            assert p.returncode == 0 and "completion --complete" in p.stdout, (prog, shell, p.stderr)
    p = cli.taro("completion", "tcsh")
    assert p.returncode == 2 and "bash, zsh or fish" in p.stderr
    assert cli.exec(["run", "completion"]).returncode == 2


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_script_completes_job_ids(cli):
    assert cli.run("--id", "nightly", "--", "true").returncode == 0
    script = cli.taro("completion", "bash").stdout
    probe = (f'{script}\nPATH="{cli.bin("taro").rsplit("/", 1)[0]}:$PATH"\n'
             'COMP_WORDS=(taro ps ni); COMP_CWORD=2; _runtools_complete; printf "%s\\n" "${COMPREPLY[@]}"\n'
             'COMP_WORDS=(taro sta); COMP_CWORD=1; _runtools_complete; printf "%s\\n" "${COMPREPLY[@]}"\n')
    p = subprocess.run(["bash", "--norc", "-c", probe], capture_output=True, text=True, timeout=30,
                       env=cli._env(None), cwd=cli.cwd)
    assert p.stdout.splitlines() == ["nightly", "stats"], p.stderr
