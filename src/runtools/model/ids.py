"""Job ids, run ids and instance ids (`job@run`), validated before they touch a path."""

from __future__ import annotations

import os
import time

from runtools.errors import UsageError

_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_REST = _FIRST | frozenset(".:+-")
_B32 = "0123456789abcdefghijklmnopqrstuv"
MAX_ID = 128


def is_valid_id(value: str) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ID
        and value[0] in _FIRST
        and all(c in _REST for c in value)
    )


def validate_id(value: str, what: str = "job id") -> str:
    """Return `value` if it is a safe id (letters, digits, `_ . : + -`, max 128), else raise UsageError."""
    if not is_valid_id(value):
        raise UsageError(
            f"invalid {what} {value!r}: use 1-{MAX_ID} letters, digits, '_', '.', ':', '+' or '-', "
            "starting with a letter, digit or '_'"
        )
    return value


def _b32(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        out.append(_B32[n & 31])
        n >>= 5
    return "".join(reversed(out))


def new_run_id(now_ns: int | None = None) -> str:
    """A run id that sorts by creation time: 11 chars of microseconds + 4 random chars."""
    us = (now_ns if now_ns is not None else time.time_ns()) // 1000
    return _b32(us, 11) + _b32(int.from_bytes(os.urandom(3), "big"), 4)


def sanitize_id(text: str) -> str:
    """Make a valid id out of any text: unsafe characters become `_`."""
    out = "".join(c if c in _REST else "_" for c in text)[:MAX_ID] or "job"
    return out if out[0] in _FIRST else ("_" + out)[:MAX_ID]


def job_id_from_command(command: list[str]) -> str:
    """Default job id: the command's basename without extension (`./my-task.sh` -> `my-task`)."""
    base = os.path.basename(command[0].rstrip("/")) or command[0]
    stem = base.lstrip(".").split(".", 1)[0]
    return sanitize_id(stem or "job")
