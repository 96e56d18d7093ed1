"""runtools.toml: run job defaults per job pattern, named environments, the default environment,
`taro config show` with where each setting came from, and one clear error for a bad key/value."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CONFIG = """\
# runtools.toml of the test
[defaults]
env = "scratch"

[environments.scratch]
path = "{home}/elsewhere"

[environments.prod]
url = "postgresql://ops:hunter2@db.example/runs"

[jobs."backup*"]
mutual_exclusion = true
timeout = "1s"
tag = ["nightly"]

[jobs."*"]
tag = "all"
time_warn = "1h"

[notifiers.ops]
type = "webhook"
url = "http://127.0.0.1:9/hook"
secret = "topsecret"
on = ["FAULT"]

[remote.groups]
web = ["w1", "w2"]
"""


@pytest.fixture
def configured(cli, home):
    (cli.cwd / "runtools.toml").write_text(CONFIG.format(home=home))
    return cli


def test_job_defaults_apply_by_pattern_and_the_command_line_wins(configured, home):
    cli = configured
    p = cli.run("--id", "backup-db", "--", "sleep", "5")
    assert p.returncode == 124, p.stderr  # timeout = "1s" from [jobs."backup*"]
    env = ["-e", str(home / "elsewhere")]
    (run,) = cli.history("backup-db", *env)
    assert run["status"] == "TIMEOUT"
    assert sorted(run["tags"]) == ["all", "nightly"]
    assert "backup-db" in json.dumps(run["coordination"])
    p = cli.run("--id", "backup-web", "--timeout", "0", "--tag", "mine", "--", "true")
    assert p.returncode == 0, p.stderr
    run = cli.history("backup-web", *env)[0]
    assert run["status"] == "COMPLETED" and sorted(run["tags"]) == ["all", "mine", "nightly"]
    assert cli.run("--id", "other", "--", "true").returncode == 0
    assert cli.history("other", *env)[0]["tags"] == ["all"]


def test_default_env_and_named_environments(configured, home):
    cli = configured
    assert cli.run("--id", "here", "--", "true").returncode == 0
    assert (home / "elsewhere" / "runs.db").exists() and not (home / "local").exists()
    assert [r["job_id"] for r in cli.history()] == ["here"]  # taro reads the default env too
    assert [r["job_id"] for r in cli.history("-e", "scratch")] == ["here"]
    # $RUNTOOLS_ENV and -e still win over [defaults] env
    assert cli.run("--id", "there", "-e", "local", "--", "true").returncode == 0
    assert [r["job_id"] for r in cli.json("history", env={"RUNTOOLS_ENV": "local"})] == ["there"]


def test_config_show_says_where_each_setting_came_from(configured):
    cli = configured
    path = str(cli.cwd / "runtools.toml")
    p = cli.taro("config", "show")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"# config file: {path}\n")
    lines = {ln.split(" = ")[0]: ln for ln in p.stdout.splitlines()[1:]}
    assert lines["defaults.env"].endswith(f"# {path}:3")
    assert lines['jobs."backup*".timeout'].endswith(f"# {path}:13")
    assert lines["retention.auto"].endswith("# default")
    assert "hunter2" not in p.stdout and "topsecret" not in p.stdout
    assert "postgresql://ops:***@db.example/runs" in p.stdout
    doc = json.loads(cli.taro("config", "show", "--json").stdout)
    rows = {r["key"]: r for r in doc["settings"]}
    assert doc["path"] == path
    assert rows["notifiers.ops.secret"] == {"key": "notifiers.ops.secret", "value": "***", "source": f"{path}:23"}
    assert rows["remote.groups.web"]["value"] == ["w1", "w2"]
    env = json.loads(cli.taro("config", "show", "--json", env={"RUNTOOLS_ENV": "local"}).stdout)
    assert {r["key"]: r for r in env["settings"]}["defaults.env"]["source"] == "$RUNTOOLS_ENV"


def test_no_config_file_shows_defaults(cli):
    p = cli.taro("config", "show")
    assert p.returncode == 0 and p.stdout.startswith("# no config file")
    assert "retention.auto = true" in p.stdout


BAD = [
    ('[retention]\nkeep = 0\n', 2, "retention.keep", "whole number"),
    ('[retention]\nolder_than = "soon"\n', 2, "retention.older_than", "not a duration"),
    ('[defaults]\nenv = "x"\n\n[jobz]\nx = 1\n', 4, "jobz", "unknown section"),
    ('[jobs."b*"]\nmutual_exclusion = "yes"\n', 2, 'jobs."b*".mutual_exclusion', "true or false"),
    ('[jobs."b*"]\ntimeout = "2h"\nfrobnicate = 1\n', 3, 'jobs."b*".frobnicate', "not a run job option"),
    ('[notifiers.n]\ntype = "pager"\n', 2, "notifiers.n.type", "must be one of"),
    ('[notifiers.n]\ntype = "webhook"\nurl = "http://x/"\non = ["sometimes"]\n', 4, "notifiers.n.on", "outcome"),
    ('[environments.e]\npath = "/x"\nurl = "postgresql://h/d"\n', 1, "environments.e", "exactly one"),
    ('[eventlog]\nmax_size = "huge"\n', 2, "eventlog.max_size", "not a size"),
    ('[retention]\nkeep = \n', 2, "keep", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "line", "key", "why"), BAD)
def test_a_bad_key_or_value_is_one_error_naming_file_line_and_key(cli, text, line, key, why):
    path = cli.cwd / "runtools.toml"
    path.write_text(text)
    for argv in (["taro", "config", "show"], ["run", "job", "--id", "b1", "--", "true"], ["taro", "ps"]):
        p = cli.exec(argv)
        assert p.returncode == 2, (argv, p.stderr)
        (err,) = p.stderr.splitlines()
        assert f"{path}:{line}" in err and key in err and why in err, err
        assert "Traceback" not in p.stderr
    assert not (cli.home / "local").exists()  # nothing was run


def test_run_job_without_config_imports_no_toml_parser(cli):
    code = ("import sys; from runtools import config; config.load(); from runtools.cli import run; "
            "a = run.parse_args(['--', 'true']); config.apply_job_defaults(a); print('tomllib' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cli.cwd,
                       env=cli._env(None), timeout=30)
    assert p.stdout.strip() == "False", p.stderr


def test_hostinfo_and_env_list_show_mask_passwords(configured, home):
    cli = configured
    (cli.cwd / "runtools.toml").write_text(CONFIG.format(home=home) + '\n[hostinfo]\nrack = "b4"\nzone = 3\n')
    assert cli.run("--id", "x", "-e", "local", "--", "true").returncode == 0
    p = cli.taro("hostinfo")
    assert p.returncode == 0, p.stderr
    assert "hunter2" not in p.stdout and "postgresql://ops:***@db.example/runs" in p.stdout
    doc = json.loads(cli.taro("hostinfo", "--json").stdout)
    assert doc["parameters"] == {"rack": "b4", "zone": 3}
    assert doc["default_env"] == {"name": "scratch", "source": f"{cli.cwd / 'runtools.toml'}:3"}
    assert doc["runtools"] and doc["python"] and doc["host"]
    names = {e["name"]: e for e in doc["environments"]}
    assert names["prod"]["kind"] == "postgres" and names["scratch"]["location"] == str(home / "elsewhere")
    assert names["local"] == {"name": "local", "kind": "local", "location": str(home / "local"),
                              "source": "$RUNTOOLS_HOME"}
    listed = json.loads(cli.taro("env", "list", "--json").stdout)
    assert [e["name"] for e in listed] == ["scratch", "prod", "local"]
    shown = json.loads(cli.taro("env", "show", "prod", "--json").stdout)
    assert shown["location"] == "postgresql://ops:***@db.example/runs" and not shown["default"]
    shown = json.loads(cli.taro("env", "show", "local", "--json").stdout)
    assert shown["exists"] and shown["database_bytes"] > 0
    assert cli.taro("env", "show", "nope").returncode == 3


def test_config_show_job_lists_the_defaults_that_apply(configured):
    cli = configured
    path = cli.cwd / "runtools.toml"
    text = cli.taro("config", "show", "--job", "backup-db").stdout.splitlines()
    assert text[0] == "# run job defaults for backup-db (the command line wins over these)"
    lines = {ln.split(" = ")[0]: ln for ln in text[1:]}
    assert lines["timeout"].startswith('timeout = "1s"') and f'{path}:13 [jobs."backup*"]' in lines["timeout"]
    assert lines["tag"].startswith('tag = ["nightly","all"]')
    doc = json.loads(cli.taro("config", "show", "--job", "other", "--json").stdout)
    assert doc == {"job_id": "other", "defaults": [
        {"option": "tag", "value": ["all"], "source": f'{path}:17 [jobs."*"]'},
        {"option": "time_warn", "value": "1h", "source": f'{path}:18 [jobs."*"]'}]}
