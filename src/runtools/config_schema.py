"""Reading and checking runtools.toml (imported only when a config file exists), and the
effective settings with their source for `taro config show`. Keys: docs/operations.md."""

from __future__ import annotations

import os

from runtools.config import CONFIG_NAME, DEFAULTS, NOTIFIER_TYPES, RULE_EVENTS, VACUUM, Config, ConfigError
from runtools.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def job_options() -> dict[str, str]:
    """run job options a [jobs."PATTERN"] table may set: dest -> kind (flag|value|append|int)."""
    from runtools.cli.run import OPTIONS

    skip = {"job_id", "run_id", "detach", "env"}
    return {dest: kind for _flags, dest, kind, *_ in OPTIONS if dest not in skip}


def parse_file(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or str(e)
        raise ConfigError(f"cannot read config file {path}: {why}") from None
    return parse_text(text, path)


def parse_text(text: str, path: str = CONFIG_NAME) -> Config:
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        line = _error_line(msg)
        where = f"{path}:{line}" if line else path
        key = _key_on_line(text, line) if line else None
        msg = msg.split(" (at line")[0]
        about = f" (key {key})" if key else ""
        raise ConfigError(f"{where}: not valid TOML{about}: {msg}; fix the file") from None
    lines = locate_keys(text)
    cfg = Config(path, data, lines)
    _check(cfg)
    return cfg


def _error_line(msg: str) -> int | None:
    import re

    m = re.search(r"at line (\d+)", msg)
    return int(m.group(1)) if m else None


def _key_on_line(text: str, line: int) -> str | None:
    rows = text.splitlines()
    if not 0 < line <= len(rows):
        return None
    s = rows[line - 1].strip()
    if "=" in s and not s.startswith("["):
        return s.split("=", 1)[0].strip() or None
    return None


# -- where each key is ---------------------------------------------------------------------------

def _split_key(s: str) -> list[str]:
    """`a."b.c".d` -> [a, b.c, d] (bare, "basic" and 'literal' keys)."""
    parts: list[str] = []
    cur = ""
    i = 0
    s = s.strip()
    while i < len(s):
        c = s[i]
        if c in "\"'":
            j = i + 1
            buf = ""
            while j < len(s) and s[j] != c:
                if c == '"' and s[j] == "\\" and j + 1 < len(s):
                    j += 1
                buf += s[j]
                j += 1
            cur += buf
            i = j + 1
            continue
        if c == ".":
            parts.append(cur.strip())
            cur = ""
        elif not c.isspace():
            cur += c
        i += 1
    parts.append(cur.strip())
    return parts


def locate_keys(text: str) -> dict[tuple[str, ...], int]:
    """(table..., key...) -> 1-based line of its definition, for headers and `key = value` lines
    (multi-line values are located by their first line)."""
    out: dict[tuple[str, ...], int] = {}
    table: list[str] = []
    depth = 0  # open brackets of a multi-line array / inline table
    for n, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        if depth > 0:
            depth += _brackets(s)
            continue
        if not s or s.startswith("#"):
            continue
        if s.startswith("["):
            inner = s.lstrip("[").split("]", 1)[0] if not s.startswith("[[") else s[2:].split("]]", 1)[0]
            table = _split_key(inner)
            out.setdefault(tuple(table), n)
            continue
        if "=" in s:
            key, value = _split_assignment(s)
            out.setdefault((*table, *_split_key(key)), n)
            depth = max(0, _brackets(value))
    return out


def _split_assignment(s: str) -> tuple[str, str]:
    quote = None
    for i, c in enumerate(s):
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "=":
            return s[:i], s[i + 1 :]
    return s, ""


def _brackets(s: str) -> int:
    n = 0
    quote = None
    for c in s:
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "#":
            break
        elif c in "[{":
            n += 1
        elif c in "]}":
            n -= 1
    return n


# -- checks ------------------------------------------------------------------------------------

def _fail(cfg: Config, keypath: tuple[str, ...], why: str) -> ConfigError:
    where = cfg.source(*keypath)
    name = ".".join(_quote(k) for k in keypath)
    return ConfigError(f"{where if where != 'default' else cfg.path}: {name}: {why}")


def _quote(k: str) -> str:
    import re

    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else '"' + k.replace('"', '\\"') + '"'


SECTIONS = ("defaults", "environments", "jobs", "notifiers", "remote", "hostinfo", "retention", "plugins",
            "eventlog", "longer_than_usual", "services")


def _check(cfg: Config) -> None:
    d = cfg.data
    for name, value in d.items():
        if name not in SECTIONS:
            raise _fail(cfg, (name,), f"unknown section or key; known: {', '.join(SECTIONS)}")
        if not isinstance(value, dict):
            raise _fail(cfg, (name,), f"must be a table ([{name}]), not a {type(value).__name__}")
    _check_keys(cfg, "defaults", {"env": _env_name})
    for env_name, spec in cfg.section("environments").items():
        _check_environment(cfg, env_name, spec)
    if "env" in cfg.section("defaults"):
        _env_name(cfg, ("defaults", "env"), cfg.section("defaults")["env"])
    opts = None
    for pattern, table in cfg.section("jobs").items():
        if not isinstance(table, dict):
            raise _fail(cfg, ("jobs", pattern), 'must be a table: [jobs."PATTERN"]')
        opts = opts or job_options()
        for key, value in table.items():
            _check_job_option(cfg, ("jobs", pattern, key), opts, value)
    for name, table in cfg.section("notifiers").items():
        _check_notifier(cfg, name, table)
    # [remote] belongs to `taro -H` (runtools.remote.targets): host groups, token, ssh options
    groups = cfg.section("remote").get("groups", {})
    if not isinstance(groups, dict):
        raise _fail(cfg, ("remote", "groups"), 'must be a table: [remote.groups] NAME = ["host", ...]')
    for group, hosts in groups.items():
        if isinstance(hosts, str):
            hosts = [hosts]
        if not (isinstance(hosts, list) and hosts and all(isinstance(h, str) and h for h in hosts)):
            raise _fail(cfg, ("remote", "groups", group), 'must be a list of targets, e.g. ["db1", "http://db2:8111"]')
    for key in ("token", "token_file", "taro"):
        if key in cfg.section("remote"):
            _str(cfg, ("remote", key), cfg.section("remote")[key])
    if "ssh_options" in cfg.section("remote"):
        _str_list(cfg, ("remote", "ssh_options"), cfg.section("remote")["ssh_options"])
    for key, value in cfg.section("hostinfo").items():
        if not isinstance(value, (str, int, float, bool)):
            raise _fail(cfg, ("hostinfo", key), "must be a string, number or boolean")
    _check_keys(cfg, "retention", {"older_than": _dur, "keep": _count, "auto": _bool, "interval": _dur,
                                   "vacuum": _choice(VACUUM)})
    _check_keys(cfg, "plugins", {"enabled": _bool, "timeout": _dur, "only": _str_list})
    _check_keys(cfg, "eventlog", {"enabled": _bool, "max_size": _size, "keep": _count, "path": _str})
    _check_keys(cfg, "longer_than_usual", {"enabled": _bool, "k": _factor, "min_runs": _count})
    if cfg.section("services"):  # [services.NAME] rate = "60/min" | [...], concurrent = N (job.service)
        from runtools.job.service import check_config_table

        for name, table in cfg.section("services").items():
            why = check_config_table(name, table)
            if why:
                raise _fail(cfg, ("services", name), why)


def _check_keys(cfg: Config, section: str, checks: dict[str, Any]) -> None:
    for key, value in cfg.section(section).items():
        check = checks.get(key)
        if check is None:
            raise _fail(cfg, (section, key), f"unknown key; known in [{section}]: {', '.join(checks)}")
        check(cfg, (section, key), value)


def _bool(cfg: Config, kp: tuple[str, ...], v: Any) -> None:
    if not isinstance(v, bool):
        raise _fail(cfg, kp, f"must be true or false, not {v!r}")


def _str(cfg: Config, kp: tuple[str, ...], v: Any) -> None:
    if not isinstance(v, str) or not v:
        raise _fail(cfg, kp, f"must be a non-empty string, not {v!r}")


def _str_list(cfg: Config, kp: tuple[str, ...], v: Any) -> None:
    if not (isinstance(v, list) and all(isinstance(x, str) and x for x in v)):
        raise _fail(cfg, kp, f'must be a list of strings, e.g. ["a", "b"], not {v!r}')


def _count(cfg: Config, kp: tuple[str, ...], v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 10**9:
        raise _fail(cfg, kp, f"must be a whole number from 1 to 1000000000, not {v!r}")


def _factor(cfg: Config, kp: tuple[str, ...], v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 1 <= v <= 1000:
        raise _fail(cfg, kp, f"must be a number from 1 to 1000, not {v!r}")


def _dur(cfg: Config, kp: tuple[str, ...], v: Any) -> None:
    from runtools.model.durations import parse_duration

    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise _fail(cfg, kp, f'must be a duration such as "30s", "2h", "7d", not {v!r}')
    try:
        cfg.secs[kp] = parse_duration(v, ".".join(kp))
    except UsageError:
        raise _fail(cfg, kp, f'{v!r} is not a duration: use e.g. "90", "30s", "10m", "2h", "7d"') from None


def _size(cfg: Config, kp: tuple[str, ...], v: Any) -> None:
    from runtools.output.capture import parse_size

    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise _fail(cfg, kp, f'must be a size such as "10M", not {v!r}')
    try:
        if parse_size(str(v), ".".join(kp)) < 1024:
            raise _fail(cfg, kp, "must be at least 1K")
    except UsageError as e:
        if isinstance(e, ConfigError):
            raise
        raise _fail(cfg, kp, f'{v!r} is not a size; use e.g. "512K", "10M"') from None


def _choice(choices: tuple[str, ...]) -> Any:
    def check(cfg: Config, kp: tuple[str, ...], v: Any) -> None:
        if v not in choices:
            raise _fail(cfg, kp, f"must be one of {', '.join(choices)}, not {v!r}")

    return check


def _env_name(cfg: Config, kp: tuple[str, ...], v: Any) -> None:
    _str(cfg, kp, v)


def _check_environment(cfg: Config, name: str, spec: Any) -> None:
    kp = ("environments", name)
    if not isinstance(spec, dict):
        raise _fail(cfg, kp, 'must be a table with path = "DIR" or url = "postgresql://..."')
    from runtools.model.ids import validate_id

    try:
        validate_id(name, "environment name")
    except UsageError as e:
        raise _fail(cfg, kp, str(e)) from None
    for key in spec:
        if key not in ("path", "url"):
            raise _fail(cfg, (*kp, key), "unknown key; an environment has path or url")
    if ("path" in spec) == ("url" in spec):
        raise _fail(cfg, kp, 'needs exactly one of path = "DIR" or url = "postgresql://..."')
    if "path" in spec:
        _str(cfg, (*kp, "path"), spec["path"])
    else:
        url = spec["url"]
        _str(cfg, (*kp, "url"), url)
        if not url.startswith(("postgres://", "postgresql://")):
            raise _fail(cfg, (*kp, "url"), "must be a PostgreSQL URL: postgresql://USER@HOST:PORT/DB")


def _check_job_option(cfg: Config, kp: tuple[str, ...], opts: dict[str, str], value: Any) -> None:
    key = kp[-1].replace("-", "_")
    kind = opts.get(key)
    if kind is None:
        raise _fail(cfg, kp, f"not a run job option; known: {', '.join(sorted(opts))}")
    if kind == "flag":
        _bool(cfg, kp, value)
    elif kind == "int":
        _count(cfg, kp, value)
    elif kind == "append":
        if isinstance(value, str):
            value = [value]
        _str_list(cfg, kp, value)
    else:
        if key in ("timeout", "kill_after", "time_warn", "pending_timeout", "after_timeout"):
            _dur(cfg, kp, value)
        elif key == "output_limit":
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise _fail(cfg, kp, f'must be a size such as "100M", not {value!r}')
        else:
            _str(cfg, kp, value)


NOTIFIER_KEYS = {
    "type": None, "url": None, "jobs": None, "on": None, "secret": None, "retries": None, "timeout": None,
    "command": None, "headers": None, "title": None, "priority": None,
}


def _check_notifier(cfg: Config, name: str, t: Any) -> None:
    kp = ("notifiers", name)
    if not isinstance(t, dict):
        raise _fail(cfg, kp, 'must be a table: [notifiers.NAME] type = "webhook", url = "..."')
    for key in t:
        if key not in NOTIFIER_KEYS:
            raise _fail(cfg, (*kp, key), f"unknown key; known: {', '.join(NOTIFIER_KEYS)}")
    kind = t.get("type")
    if kind not in NOTIFIER_TYPES:
        raise _fail(cfg, (*kp, "type"), f"must be one of {', '.join(NOTIFIER_TYPES)}, not {kind!r}")
    if kind == "command":
        cmd = t.get("command")
        if isinstance(cmd, str):
            cmd = [cmd]
        if not cmd:
            raise _fail(cfg, (*kp, "command"), 'a command notifier needs command = ["program", "arg", ...]')
        _str_list(cfg, (*kp, "command"), cmd)
    else:
        url = t.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise _fail(cfg, (*kp, "url"), f"a {kind} notifier needs url = \"http(s)://...\", not {url!r}")
    for key in ("jobs", "on"):
        if key in t:
            _str_list(cfg, (*kp, key), [t[key]] if isinstance(t[key], str) else t[key])
    for word in ([t["on"]] if isinstance(t.get("on"), str) else t.get("on", [])):
        if not rule_word_ok(word):
            raise _fail(cfg, (*kp, "on"), f"{word!r} is not an outcome (SUCCESS, FAULT, ABORTED, REJECTED), "
                                          f"a status (FAILED, ...) or one of {', '.join(RULE_EVENTS)}")
    if "retries" in t and (isinstance(t["retries"], bool) or not isinstance(t["retries"], int)
                           or not 0 <= t["retries"] <= 20):
        raise _fail(cfg, (*kp, "retries"), f"must be a whole number from 0 to 20, not {t['retries']!r}")
    if "timeout" in t:
        _dur(cfg, (*kp, "timeout"), t["timeout"])
    if "secret" in t:
        _str(cfg, (*kp, "secret"), t["secret"])
    if "headers" in t and not (isinstance(t["headers"], dict)
                               and all(isinstance(v, str) for v in t["headers"].values())):
        raise _fail(cfg, (*kp, "headers"), 'must be a table of strings, e.g. {"X-Team" = "ops"}')
    for key in ("title", "priority"):
        if key in t:
            _str(cfg, (*kp, key), str(t[key]) if isinstance(t[key], int) else t[key])


def rule_word_ok(word: str) -> bool:
    from runtools.model.status import Outcome, Status

    w = word.upper()
    return (word.lower() in RULE_EVENTS or w in Outcome.__members__ or w in Status.__members__)


# -- effective settings, for `taro config show` -------------------------------------------------

def _mask(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if key in ("secret", "token"):
        return "***"
    if "://" in value:
        from runtools.env.postgres.store import redact

        return redact(value)
    return value


def effective(cfg: Config) -> list[dict[str, Any]]:
    """Every setting in effect: [{key, value, source}] — the file's values (secrets and URL
    passwords masked) and the defaults of what it leaves out; $RUNTOOLS_ENV over defaults.env."""
    rows: list[dict[str, Any]] = []

    def walk(prefix: tuple[str, ...], value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk((*prefix, k), v)
            return
        rows.append({"key": ".".join(_quote(k) for k in prefix), "value": _mask(prefix[-1], value),
                     "source": cfg.source(*prefix)})

    for section in SECTIONS:
        present = cfg.section(section)
        defaults = DEFAULTS.get(section, {})
        for k, v in present.items():
            if section == "hostinfo":
                rows.append({"key": f"hostinfo.{_quote(k)}", "value": v, "source": cfg.source(section, k)})
            else:
                walk((section, k), v)
        for k, v in defaults.items():
            if k not in present:
                rows.append({"key": f"{section}.{k}", "value": v, "source": "default"})
    env = os.environ.get("RUNTOOLS_ENV")
    if env:
        for r in rows:
            if r["key"] == "defaults.env":
                r["value"], r["source"] = _mask("env", env), "$RUNTOOLS_ENV"
    return rows
