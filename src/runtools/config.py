"""The config file `runtools.toml`: what it may say, where each effective setting came from.

Lookup (DESIGN §5): $RUNTOOLS_CONFIG if set, else ./runtools.toml, else
$XDG_CONFIG_HOME/runtools/runtools.toml (default ~/.config), else /etc/runtools/runtools.toml.
The first file that exists wins; there is no merging between files.

Cheap when there is no file: `load()` costs three `stat` calls and imports nothing (no
tomllib) — `run job` calls it on every run. The parsed file is cached per process.

Every key is checked when the file is read: an unknown key or a bad value is one `ConfigError`
(exit 2) naming the file, the line and the key. See docs/operations.md for every key.
"""

from __future__ import annotations

import os

from runtools.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CONFIG_NAME = "runtools.toml"
CONFIG_ENV = "RUNTOOLS_CONFIG"


class ConfigError(UsageError):
    """The config file says something runtools does not understand."""


def candidates() -> list[str]:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return [explicit]
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    try:
        cwd = os.getcwd()
    except OSError:  # the working directory was removed: skip ./runtools.toml
        cwd = None
    out = [os.path.join(xdg, "runtools", CONFIG_NAME), os.path.join("/etc/runtools", CONFIG_NAME)]
    return [os.path.join(cwd, CONFIG_NAME), *out] if cwd else out


def find() -> str | None:
    for p in candidates():
        if os.path.isfile(p):
            return p
    if os.environ.get(CONFIG_ENV):
        raise ConfigError(f"${CONFIG_ENV} names {os.environ[CONFIG_ENV]}, which is not a file: fix or unset it")
    return None


# -- the schema --------------------------------------------------------------------------------

#: defaults of the sections whose keys have one (shown by `taro config show` as "default")
DEFAULTS: dict[str, dict[str, Any]] = {
    "defaults": {"env": "local"},
    "retention": {"auto": True, "interval": "1h", "vacuum": "auto"},
    "plugins": {"enabled": False, "timeout": "2s"},
    "eventlog": {"enabled": False, "max_size": "10M", "keep": 3},
    "longer_than_usual": {"enabled": True, "k": 2.0, "min_runs": 10},
}

NOTIFIER_TYPES = ("webhook", "ntfy", "healthchecks", "command")
#: what a notifier rule's `on` may name: outcomes, statuses, and events
RULE_EVENTS = ("start", "ended", "warning", "longer_than_usual")
VACUUM = ("auto", "never", "always")


class Config:
    """The parsed, checked config file (or none). `source(path)` says where a value came from."""

    def __init__(self, path: str | None = None, data: dict[str, Any] | None = None,
                 lines: dict[tuple[str, ...], int] | None = None) -> None:
        self.path = path
        self.data: dict[str, Any] = data or {}
        self.lines = lines or {}
        self.secs: dict[tuple[str, ...], float] = {}  # every duration of the file, in seconds (checked)

    # -- reading ------------------------------------------------------------------------------
    def get(self, section: str, key: str) -> Any:
        sec = self.data.get(section)
        if isinstance(sec, dict) and key in sec:
            return sec[key]
        return DEFAULTS.get(section, {}).get(key)

    def section(self, name: str) -> dict[str, Any]:
        sec = self.data.get(name)
        return sec if isinstance(sec, dict) else {}

    def has(self, section: str) -> bool:
        return section in self.data

    def source(self, *keypath: str) -> str:
        line = self.lines.get(tuple(keypath))
        if line is None:
            for n in range(len(keypath) - 1, 0, -1):
                line = self.lines.get(tuple(keypath[:n]))
                if line is not None:
                    break
        return f"{self.path}:{line}" if line is not None and self.path else "default"

    def wants_hooks(self) -> bool:
        """True when a run needs the hook point (runtools.plugins.hub): event log, plugins,
        notifiers or automatic retention are on ("longer than usual" needs no hub: job.longer)."""
        if not self.data:
            return False
        ret = self.section("retention")
        return bool(self.get("eventlog", "enabled") or self.get("plugins", "enabled") or self.section("notifiers")
                    or (self.get("retention", "auto") and ("older_than" in ret or "keep" in ret)))

    def job_defaults(self, job_id: str) -> list[tuple[str, dict[str, Any]]]:
        """[(pattern, options)] of every [jobs."PATTERN"] table matching `job_id`, file order."""
        jobs = self.section("jobs")
        if not jobs:
            return []
        return [(pat, opts) for pat, opts in jobs.items() if glob_match(job_id, pat)]

    def environments(self) -> dict[str, dict[str, Any]]:
        return self.section("environments")

    def duration(self, section: str, key: str) -> float | None:
        """A duration setting in seconds (parsed when the file was checked; no `re` here)."""
        secs = self.secs.get((section, key))
        if secs is not None:
            return secs
        if key in self.section(section):
            from runtools.model.durations import parse_duration

            return parse_duration(self.section(section)[key], f"{section}.{key}")
        return DEFAULT_SECONDS.get((section, key))


#: the duration defaults of DEFAULTS, in seconds
DEFAULT_SECONDS = {("retention", "interval"): 3600.0, ("plugins", "timeout"): 2.0}


def glob_match(name: str, pattern: str) -> bool:
    """fnmatchcase without importing `re` (which `run job` otherwise never needs): * ? [...] [!...]."""
    if not any(c in pattern for c in "*?["):
        return name == pattern
    if "[" in pattern:
        from fnmatch import fnmatchcase

        return fnmatchcase(name, pattern)
    return _star(name, 0, pattern, 0)


def _star(s: str, i: int, p: str, j: int) -> bool:
    while j < len(p):
        c = p[j]
        if c == "*":
            while j < len(p) and p[j] == "*":
                j += 1
            if j == len(p):
                return True
            return any(_star(s, k, p, j) for k in range(i, len(s) + 1))
        if i >= len(s) or (c != "?" and c != s[i]):
            return False
        i += 1
        j += 1
    return i == len(s)


_cache: dict[str, Config] = {}
_EMPTY = Config()


def load(path: str | None = None) -> Config:
    """The config in effect (cached per process); an empty Config when there is no file."""
    path = path or find()
    if path is None:
        return _EMPTY
    try:
        st = os.stat(path)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    key = f"{path}\0{st.st_mtime_ns}\0{st.st_size}\0{st.st_ino}"
    cfg = _cache.get(key)
    if cfg is None:
        cfg = _cache[key] = _from_disk_cache(path, key)
    return cfg


#: bump when what a parsed config holds changes shape
_CACHE_VERSION = 2
#: the modules that check a config file: a cached config is checked again when one changes
_CHECKERS = ("config_schema.py", "cli/run.py", "job/service.py")


def _from_disk_cache(path: str, key: str) -> Config:
    """The parsed and checked config, kept in $XDG_CACHE_HOME/runtools/ as a marshal file:
    importing tomllib alone costs `run job` ~8 ms; reading the cache costs ~0.1 ms. The cache is
    keyed by the file's path, mtime, size and inode and by the mtimes of the modules that check
    it, and is written owner-only (it may hold secrets)."""
    import marshal

    here = os.path.dirname(__file__)
    try:
        code = "".join(str(os.stat(os.path.join(here, m)).st_mtime_ns) for m in _CHECKERS)
    except OSError:
        code = "?"
    full = f"{_CACHE_VERSION}\0{key}\0{code}"
    from _blake2 import blake2b

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    cache = os.path.join(base, "runtools", f"config-{blake2b(path.encode(), digest_size=12).hexdigest()}.bin")
    try:
        with open(cache, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_uid == os.getuid() and not st.st_mode & 0o022:  # ours, and only ours to write
                stored_key, data, lines, secs = marshal.load(f)
                if stored_key == full:
                    cfg = Config(path, data, lines)
                    cfg.secs = secs
                    return cfg
    except (OSError, ValueError, EOFError, TypeError):
        pass
    from runtools.config_schema import parse_file

    cfg = parse_file(path)
    try:
        blob = marshal.dumps((full, cfg.data, cfg.lines, cfg.secs))
    except ValueError:  # TOML dates are not marshallable: no disk cache for this file
        return cfg
    try:
        os.makedirs(os.path.dirname(cache), mode=0o700, exist_ok=True)
        tmp = f"{cache}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, blob)
        finally:
            os.close(fd)
        os.replace(tmp, cache)
    except OSError:
        pass
    return cfg


# -- run job defaults per job pattern ----------------------------------------------------------

def apply_job_defaults(a: Any, cfg: Config | None = None) -> list[str]:
    """Fill the `run job` options `a` (cli.run.Args) left unset from every [jobs."PATTERN"] table
    matching the run's job id, in file order (an earlier table wins; the command line wins over
    all). Lists (tag, output_warn, requires, after) are added to. Returns the patterns applied."""
    cfg = cfg or load()
    if not cfg.section("jobs"):
        return []
    cmd = [c for c in a.command if c != "--"][:1]
    if a.job_id is None and not (cmd and cmd[0]):
        return []
    from runtools.model.ids import job_id_from_command

    job_id = a.job_id or job_id_from_command(cmd)
    matching = cfg.job_defaults(job_id)
    if not matching:
        return []
    from runtools.config_schema import job_options

    opts = job_options()
    applied = []
    cli_set = {dest for dest in opts if getattr(a, dest) not in (None, False, [])}
    for pattern, table in matching:
        applied.append(pattern)
        for key, value in table.items():
            dest = key.replace("-", "_")
            kind = opts[dest]
            if kind == "append":
                extra = [value] if isinstance(value, str) else list(value)
                current = getattr(a, dest)
                setattr(a, dest, current + [v for v in extra if v not in current])
            elif dest in cli_set:
                continue
            elif getattr(a, dest) in (None, False):
                setattr(a, dest, str(value) if kind == "value" else value)
    return applied
