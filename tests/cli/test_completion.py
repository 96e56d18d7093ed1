"""Shell completion: taro completion bash|zsh|fish and run completion ...; the candidates (verbs,
options, actions, environments, job ids from history) and the scripts in a real bash."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

from conftest import need_service, wait_until


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


#: (what is typed, what completes) in every shell: verbs, options, job ids from history, run's verbs
CASES = [
    ("taro ps ni", ["nightly"]),
    ("taro sta", ["stats"]),
    ("taro history --js", ["--json"]),
    ("taro stop !ni", ["!nightly"]),
    ("taro config show --r", ["--raw"]),
    ("run job --id ni", ["nightly"]),
    ("run job --mutual-ex", ["--mutual-exclusion"]),
    ("run completion z", ["zsh"]),
]


def _history(cli) -> None:
    assert cli.run("--id", "nightly", "--", "true").returncode == 0


def test_bash_completes_through_the_script(cli):
    need_service(shutil.which("bash") is not None, "bash")
    _history(cli)
    script = cli.taro("completion", "bash").stdout
    probe = [script, f'PATH="{cli.bin("taro").rsplit("/", 1)[0]}:$PATH"',
             'complete -p taro run']  # the script registered both
    for line, _ in CASES:
        words = line.split(" ")
        quoted = " ".join(f"'{w}'" for w in words)
        probe.append(f'COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; COMPREPLY=(); _runtools_complete; '
                     'printf "%s\\n" "${COMPREPLY[@]}" "=="')
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", "\n".join(probe)], capture_output=True, text=True,
                       timeout=30, env=cli._env(None), cwd=cli.cwd)
    assert p.returncode == 0, p.stderr
    out = p.stdout.split("==\n")
    assert "complete -o default -o nosort -F _runtools_complete taro" in out[0]
    got = [[x for x in chunk.splitlines() if x] for chunk in out[:-1]]
    got[0] = [x for x in got[0] if not x.startswith("complete ")]
    assert got == [want for _, want in CASES], p.stderr


def test_fish_completes_through_the_script(cli):
    need_service(shutil.which("fish") is not None, "fish")
    _history(cli)
    (cli.cwd / "runfile.sh").write_text("")
    script = cli.taro("completion", "fish").stdout
    probe = [script]
    for line, _ in [*CASES, ("run job --id x ./runf", None), ("taro ps zzz", None)]:
        probe.append(f"complete -C '{line}'; echo ==")
    env = cli._env({"PATH": f"{cli.bin('taro').rsplit('/', 1)[0]}:{os.environ['PATH']}"})
    p = subprocess.run(["fish", "--no-config", "-c", "\n".join(probe)], capture_output=True, text=True,
                       timeout=60, env=env, cwd=cli.cwd)
    assert p.returncode == 0, p.stderr
    got = [[x.split("\t")[0] for x in chunk.splitlines() if x] for chunk in p.stdout.split("==\n")[:-1]]
    assert got[:len(CASES)] == [want for _, want in CASES], p.stdout
    assert got[len(CASES):] == [["./runfile.sh"], []]  # run's command: the shell's files; taro: never files


def test_zsh_completes_through_compinit_in_a_terminal(cli, tmp_path):
    """A real interactive zsh on a pty, compinit loaded, the script eval'ed; TAB pressed after each
    line. `compadd` is wrapped to write the matches it was given (what zsh then offers) to a file."""
    need_service(shutil.which("zsh") is not None, "zsh")
    _history(cli)
    capture = tmp_path / "matches"
    capture.write_text("")
    env = cli._env({"PATH": f"{cli.bin('taro').rsplit('/', 1)[0]}:{os.environ['PATH']}", "CAPTURE": str(capture),
                    "ZDOTDIR": str(tmp_path), "TERM": "dumb", "HISTFILE": "/dev/null"})
    master, slave = os.openpty()
    shell = subprocess.Popen(["zsh", "-f", "-i"], stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cli.cwd,
                             start_new_session=True)
    os.close(slave)
    screen = bytearray()

    def drain() -> None:  # the terminal's output must be read, or zsh blocks on a full pty
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            screen.extend(chunk)

    threading.Thread(target=drain, daemon=True).start()
    try:
        def type_(text: str) -> None:
            os.write(master, text.encode())

        type_("autoload -U compinit; compinit -u -D\n")
        type_('eval "$(taro completion zsh)"\n')
        type_('compadd() { local -a m; builtin compadd -A m "$@"; print -rl -- $m "<end>" >> $CAPTURE; '
              'builtin compadd "$@"; }\n')
        got = []
        for line, _ in CASES:
            before = capture.read_text().count("<end>\n")
            type_(line + "\t")
            wait_until(lambda b=before: capture.read_text().count("<end>\n") > b, timeout=20,
                       what=f"zsh to complete {line!r}: {bytes(screen[-300:])!r}")
            type_("\x15")  # ^U: clear the line for the next one
            got.append(capture.read_text().split("<end>\n")[before].split())
        assert got == [want for _, want in CASES]
    finally:
        shell.kill()
        shell.wait(10)
        os.close(master)
