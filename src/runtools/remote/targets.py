"""Targets of `taro -H`: parsing, named host groups and settings from the config file.

runtools.toml:

    [remote]
    token_file = "~/.config/runtools/token"   # or token = "..." (RUNTOOLS_TOKEN wins)
    taro = "/opt/runtools/.venv/bin/taro"      # the taro to run over ssh (RUNTOOLS_REMOTE_TARO wins)
    ssh_options = ["-o", "ConnectTimeout=5"]   # extra options for ssh (RUNTOOLS_SSH_OPTS wins)

    [remote.groups]
    prod = ["http://web1:8765", "ops@db1"]
"""

from __future__ import annotations

import os
from typing import Any

from runtools.errors import UsageError


class Target:
    __slots__ = ("host", "kind", "port", "text", "url", "user")

    def __init__(self, text: str, kind: str, url: str | None = None, user: str | None = None,
                 host: str | None = None, port: int | None = None) -> None:
        self.text = text
        self.kind = kind  # "http" or "ssh"
        self.url = url
        self.user = user
        self.host = host
        self.port = port

    def __repr__(self) -> str:
        return f"Target({self.text})"


def parse_target(text: str) -> Target:
    from urllib.parse import urlsplit

    t = text.strip()
    if not t or any(c.isspace() or ord(c) < 32 for c in t):
        raise UsageError(f"invalid target {text!r}: use http://host:port, https://..., ssh://[user@]host[:port] "
                         "or user@host")
    if t.startswith(("http://", "https://")):
        u = urlsplit(t)
        try:
            u.port  # noqa: B018 - validates the port
        except ValueError:
            raise UsageError(f"invalid target {text!r}: bad port") from None
        if not u.hostname:
            raise UsageError(f"invalid target {text!r}: no host")
        return Target(t, "http", url=t.rstrip("/"))
    if t.startswith("ssh://"):
        u = urlsplit(t)
        try:
            port = u.port
        except ValueError:
            raise UsageError(f"invalid target {text!r}: bad port") from None
        if not u.hostname:
            raise UsageError(f"invalid target {text!r}: no host")
        return Target(t, "ssh", user=u.username, host=u.hostname, port=port)
    if "://" in t:
        raise UsageError(f"invalid target {text!r}: use http://, https:// or ssh://")
    if t.startswith("-"):
        raise UsageError(f"invalid target {text!r}: a host cannot start with '-'")
    user, _, host = t.rpartition("@")
    return Target(t, "ssh", user=user or None, host=host)


def config() -> dict[str, Any]:
    """The [remote] table of the config file in use (runtools.config: checked, cached; empty
    without a file)."""
    from runtools.config import load

    return load().section("remote")


def expand(values: list[str], cfg: dict[str, Any]) -> list[Target]:
    """`-H a,b -H group`: comma-separated targets and named groups, each target once, in order."""
    groups = cfg.get("groups") or {}
    out: list[Target] = []
    seen: set[str] = set()

    def add(word: str, depth: int = 0) -> None:
        if word in groups and depth < 5:
            members = groups[word]
            if isinstance(members, str):
                members = [members]
            for m in members:
                for w in str(m).split(","):
                    if w.strip():
                        add(w.strip(), depth + 1)
            return
        t = parse_target(word)
        if t.text not in seen:
            seen.add(t.text)
            out.append(t)

    for v in values:
        words = [w.strip() for w in v.split(",")]
        if not any(words):
            raise UsageError("-H needs a target: http://host:port, ssh://host, user@host or a group name")
        for w in words:
            if w:
                add(w)
    return out


def token(cfg: dict[str, Any]) -> str | None:
    env = os.environ.get("RUNTOOLS_TOKEN")
    if env:
        return env.split(":", 1)[1] if env.startswith(("read:", "operate:")) else env
    if cfg.get("token"):
        return str(cfg["token"])
    path = cfg.get("token_file")
    if path:
        try:
            with open(os.path.expanduser(str(path)), encoding="utf-8") as f:
                for line in f:
                    w = line.split("#", 1)[0].split()
                    if w:
                        t = w[0]
                        return t.split(":", 1)[1] if t.startswith(("read:", "operate:")) else t
        except OSError as e:
            raise UsageError(f"cannot read the token file {path}: {e.strerror}") from None
    return None


def remote_taro(cfg: dict[str, Any]) -> str:
    return os.environ.get("RUNTOOLS_REMOTE_TARO") or str(cfg.get("taro") or "taro")


def ssh_options(cfg: dict[str, Any]) -> list[str]:
    import shlex

    env = os.environ.get("RUNTOOLS_SSH_OPTS")
    if env is not None:
        return shlex.split(env)
    opts = cfg.get("ssh_options") or []
    return [str(o) for o in opts] if isinstance(opts, list) else shlex.split(str(opts))
