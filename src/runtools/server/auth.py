"""Tokens: who may read, who may operate, and the page's sign-in sessions.

A token file holds one token a line: `[read:|operate:]TOKEN [NAME]` (plain = operate; `#`
starts a comment). NAME is what control actions record as "by" (default: `token N` for the
Nth line). Tokens are compared in constant time and never written to any log.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time

READ = "read"
OPERATE = "operate"
ROLES = (READ, OPERATE)
COOKIE = "rt_session"
SESSION_TTL_S = 12 * 3600.0


class Token:
    __slots__ = ("name", "role", "secret")

    def __init__(self, secret: str, role: str, name: str) -> None:
        self.secret = secret
        self.role = role
        self.name = name

    def __repr__(self) -> str:  # never the secret
        return f"Token({self.name!r}, {self.role})"

    @property
    def can_operate(self) -> bool:
        return self.role == OPERATE


def parse_token_lines(text: str, source: str) -> list[Token]:
    from runtools.errors import UsageError

    tokens = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split(None, 1)
        secret, name = words[0], (words[1].strip() if len(words) > 1 else f"token {n}")
        role = OPERATE
        for r in ROLES:
            if secret.startswith(r + ":"):
                role, secret = r, secret[len(r) + 1:]
                break
        if len(secret) < 8:
            raise UsageError(f"{source} line {n}: a token must be at least 8 characters long")
        tokens.append(Token(secret, role, name))
    if not tokens:
        raise UsageError(f"{source} holds no token: write one token a line ([read:|operate:]TOKEN [NAME])")
    return tokens


def load_token_file(path: str) -> list[Token]:
    from runtools.errors import UsageError

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise UsageError(f"cannot read --token-file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--token-file {path} is not UTF-8 text") from None
    return parse_token_lines(text, path)


def generated_token(path: str) -> tuple[list[Token], bool]:
    """The operate token kept (owner-only) at `path`, made on first use; (tokens, created)."""
    if os.path.exists(path):
        return load_token_file(path), False
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    secret = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"# taro serve: operate token (created {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        f.write(f"operate:{secret} generated\n")
    return [Token(secret, OPERATE, "generated")], True


class Auth:
    """Bearer tokens for the API; cookie sessions (with a CSRF token each) for the page."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self._sessions: dict[str, tuple[Token, str, float]] = {}  # id -> (token, csrf, expires)
        self._lock = threading.Lock()

    def check(self, secret: str | None) -> Token | None:
        if not secret:
            return None
        found = None
        given = secret.encode("utf-8", "surrogateescape")
        for t in self.tokens:  # every token compared: the time says nothing about which one
            if hmac.compare_digest(t.secret.encode("utf-8"), given):
                found = t
        return found

    def open_session(self, token: Token) -> tuple[str, str]:
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            for k in [k for k, v in self._sessions.items() if v[2] < now]:
                del self._sessions[k]
            self._sessions[sid] = (token, csrf, now + SESSION_TTL_S)
        return sid, csrf

    def session(self, sid: str | None) -> tuple[Token, str] | None:
        if not sid:
            return None
        with self._lock:
            found = self._sessions.get(sid)
        if found is None or found[2] < time.monotonic():
            return None
        return found[0], found[1]

    def close_session(self, sid: str | None) -> None:
        with self._lock:
            self._sessions.pop(sid or "", None)
