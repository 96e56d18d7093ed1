"""User text in human output (tables, messages, suggested commands) can neither paint the
terminal nor run code when pasted; JSON keeps it byte-exact."""

from __future__ import annotations

import json
import os
import subprocess

from hypothesis import given, settings
from hypothesis import strategies as st

from runtools.model.text import printable, shell_quote

ANSI = "\x1b[2J\x1b[31m"


@given(st.text())
def test_printable_output_has_no_control_characters(text: str) -> None:
    out = printable(text)
    assert out.isprintable()
    if text.isprintable():
        assert out == text


# what argv can hold: no NUL; an undecodable byte arrives as a lone surrogate U+DC80..U+DCFF
ARGV_TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
                    | st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF), max_size=30)


@given(ARGV_TEXT)
@settings(max_examples=40, deadline=None)
def test_shell_quote_is_one_word_with_the_same_value(text: str) -> None:
    """What bash makes of the suggested word is the text itself (the same bytes), nothing
    runs, and the word itself shows no control character."""
    word = shell_quote(text)
    assert word.isprintable()
    p = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True, timeout=10,
                       env={"PATH": os.environ["PATH"], "LC_ALL": "C.UTF-8"})
    assert p.returncode == 0 and p.stdout == os.fsencode(text)


def test_a_command_substitution_in_a_run_key_is_quoted_in_the_hint(cli, tmp_path) -> None:
    key = f"$(touch {tmp_path}/pwned)"
    assert cli.run("--id", "k", "--strict", "--run-key", key, "--", "true").returncode == 0
    p = cli.run("--id", "k", "--strict", "--run-key", key, "--", "true")
    assert p.returncode == 105
    hint = p.stderr.split("`")[1]
    assert hint == f"taro unlock '{key}'"
    subprocess.run(["bash", "-c", hint.replace("taro", "echo", 1)], check=True, capture_output=True, timeout=10)
    assert not (tmp_path / "pwned").exists()


def test_escape_sequences_in_a_reason_are_shown_escaped_and_stored_exactly(cli, wait_until) -> None:
    proc = cli.spawn_run("--id", "gated", "--approval", "ok", "--", "true")
    cli.wait_state("gated", "PENDING")
    reason = f"no{ANSI}\nforged row"
    d = cli.taro("deny", "gated", "--reason", reason)
    assert d.returncode == 0, d.stderr
    assert proc.wait(30) == 102
    table = cli.taro("history").stdout
    assert "\x1b" not in table and "\\x1b[2J" in table and len(table.splitlines()) == 2
    [run] = cli.history()
    assert reason in run["error"]  # JSON: the data itself
    raw = cli.taro("history", "--json", binary=True).stdout
    assert json.loads(raw)[0]["error"] == run["error"]
    err = proc.stderr.read().decode()
    assert "\x1b" not in err and err.count("\n") == 1


def test_patterns_and_keys_echoed_back_are_printable(cli) -> None:
    p = cli.taro("disable", f"x{ANSI}*")  # not a valid pattern: the error shows it escaped
    assert p.returncode == 2 and "\x1b" not in p.stderr and p.stderr.count("\n") == 1
    assert cli.run("--id", "k", "--strict", "--run-key", f"key{ANSI}", "--", "true").returncode == 0
    p = cli.taro("unlock", f"key{ANSI}")
    assert p.returncode == 0 and "\x1b" not in p.stdout + p.stderr and "key\\x1b[2J" in p.stdout
    p = cli.taro("unlock", f"nokey{ANSI}")
    assert p.returncode == 3 and "\x1b" not in p.stdout + p.stderr and p.stderr.count("\n") == 1
