"""taro disable / enable / list-disabled, taro config show / path / list-disabled (black box)."""

from __future__ import annotations

from runtools.model.status import NOT_EXECUTED_EXIT


def test_disabled_job_ends_disabled_without_executing_and_is_recorded(cli, tmp_path):
    marker = tmp_path / "ran"
    d = cli.taro("disable", "backup", "nightly-*")
    assert d.returncode == 0, d.stderr
    assert d.stdout.splitlines() == ["disabled backup", "disabled nightly-*"]
    p = cli.run("--id", "backup", "--", "touch", str(marker))
    assert p.returncode == NOT_EXECUTED_EXIT["DISABLED"] == 101
    assert not marker.exists()
    assert cli.run("--id", "nightly-report", "--", "true").returncode == 101
    assert cli.run("--id", "other", "--", "true").returncode == 0
    h = cli.history("backup")[0]
    assert (h["status"], h["outcome"], h["started_at"]) == ("DISABLED", "REJECTED", None)
    assert "taro enable backup" in h["error"]

    e = cli.taro("enable", "backup")
    assert e.returncode == 0 and e.stdout == "enabled backup\n"
    assert cli.run("--id", "backup", "--", "touch", str(marker)).returncode == 0
    assert marker.exists()
    assert [r["status"] for r in cli.history("backup")] == ["COMPLETED", "DISABLED"]


def test_list_disabled_in_both_places(cli):
    assert cli.taro("list-disabled").stdout == ""
    assert cli.json("list-disabled") == []
    cli.taro("disable", "b*", "a")
    items = cli.json("list-disabled")
    assert [i["pattern"] for i in items] == ["a", "b*"]
    assert all(i["by"] and i["disabled_at"] for i in items)
    assert cli.json("config", "list-disabled") == items
    text = cli.taro("config", "list-disabled").stdout
    assert text.splitlines()[0].split() == ["PATTERN", "DISABLED", "AT", "BY"]
    assert "b*" in text


def test_enable_of_a_pattern_that_is_not_disabled_fails(cli):
    p = cli.taro("enable", "nope")
    assert p.returncode == 3
    assert "not disabled: nope" in p.stderr


def test_disable_rejects_a_bad_pattern_and_writes_nothing(cli):
    p = cli.taro("disable", "ok", "bad pattern")
    assert p.returncode == 2
    assert "invalid pattern" in p.stderr
    assert cli.json("list-disabled") == []


def test_disable_is_checked_in_the_creating_transaction_even_with_coordination(cli):
    cli.taro("disable", "q")
    assert cli.run("--id", "q", "--serial", "--pending", "x", "--", "true").returncode == 101
    assert cli.ps() == []


def test_config_path_and_show(cli, tmp_path):
    p = cli.taro("config", "path")
    assert p.returncode == 3 and "no config file found" in p.stderr
    cfg_dir = tmp_path / "config" / "runtools"  # $XDG_CONFIG_HOME/runtools (see conftest)
    cfg_dir.mkdir(parents=True)
    (cfg_dir / "runtools.toml").write_text('[defaults]\nenv = "local"\n')
    assert cli.taro("config", "path").stdout == f"{cfg_dir / 'runtools.toml'}\n"
    show = cli.taro("config", "show", "--raw")
    assert show.returncode == 0
    assert show.stdout == f"# {cfg_dir / 'runtools.toml'}\n[defaults]\nenv = \"local\"\n"
    # ./runtools.toml wins over the XDG one
    (cli.cwd / "runtools.toml").write_text("[defaults]\n")
    assert cli.taro("config", "path").stdout == f"{cli.cwd / 'runtools.toml'}\n"
    (cli.cwd / "runtools.toml").write_text("x = = 1\n")
    bad = cli.taro("config", "show")
    assert bad.returncode == 2 and "not valid TOML" in bad.stderr and "runtools.toml:1" in bad.stderr
