"""Reading stored output: the last N lines of a file without reading it all."""

from __future__ import annotations

import os


def last_lines(path: str, n: int, end: int | None = None, block: int = 65536) -> list[bytes]:
    """The last `n` lines (without newlines) of `path[:end]`; [] if the file is missing."""
    if n <= 0:
        return []
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return []
    try:
        size = os.fstat(fd).st_size if end is None else end
        pos, data = size, b""
        while pos > 0 and data.count(b"\n") <= n:
            step = min(block, pos)
            pos -= step
            data = os.pread(fd, step, pos) + data
    finally:
        os.close(fd)
    if not data:
        return []
    if data.endswith(b"\n"):
        data = data[:-1]  # a file holding just "\n" has one (empty) line
    return data.split(b"\n")[-n:]


def copy_range(path: str, start: int, end: int | None, out_fd: int, block: int = 1 << 20) -> int:
    """Write bytes [start, end) of `path` to `out_fd`; returns the end offset reached."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return start
    try:
        end = os.fstat(fd).st_size if end is None else end
        pos = start
        while pos < end:
            chunk = os.pread(fd, min(block, end - pos), pos)
            if not chunk:
                break
            write_all(out_fd, chunk)
            pos += len(chunk)
        return pos
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
