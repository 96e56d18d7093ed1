"""Job ids, run ids and instance ids (`job@run`), validated before they touch a path."""

from __future__ import annotations

import os
import re
import time

from runtools.errors import UsageError

_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:+-]{0,127}")
_B32 = "0123456789abcdefghijklmnopqrstuv"


def validate_id(value: str, what: str = "job id") -> str:
    """Return `value` if it is a safe id (letters, digits, `_ . : + -`, max 128), else raise UsageError."""
    if not _ID_RE.fullmatch(value) or value in (".", ".."):
        raise UsageError(
            f"invalid {what} {value!r}: use 1-128 letters, digits, '_', '.', ':', '+' or '-', "
            "not starting with a punctuation mark"
        )
    return value


def _b32(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        out.append(_B32[n & 31])
        n >>= 5
    return "".join(reversed(out))


def new_run_id(now_ns: int | None = None) -> str:
    """A run id that sorts by creation time: 10 chars of microseconds + 4 random chars."""
    us = (now_ns if now_ns is not None else time.time_ns()) // 1000
    return _b32(us, 11) + _b32(int.from_bytes(os.urandom(3), "big"), 4)


def instance_id(job_id: str, run_id: str) -> str:
    return f"{job_id}@{run_id}"


def split_instance_id(iid: str) -> tuple[str, str]:
    job, sep, run = iid.partition("@")
    if not sep:
        raise UsageError(f"invalid instance id {iid!r}: expected JOB@RUN")
    return job, run


def job_id_from_command(command: list[str]) -> str:
    """Default job id: the command's basename without extension (`./my-task.sh` -> `my-task`)."""
    base = os.path.basename(command[0].rstrip("/")) or command[0]
    stem = base.split(".", 1)[0] if not base.startswith(".") else base.lstrip(".").split(".", 1)[0]
    stem = re.sub(r"[^A-Za-z0-9_.:+-]", "_", stem or "job")
    if not stem or not (stem[0].isalnum() or stem[0] == "_"):
        stem = "_" + stem
    return stem[:128]
