"""Reading stored output: the last N lines of a file without reading it all.

Every reader here is linear in what it returns: the file is scanned backwards once, block by
block, counting newlines per block (never re-scanning what was read), and the lines found are
copied out in bounded blocks rather than held whole. One 50 MB line costs one pass over 50 MB.
"""

from __future__ import annotations

import os

BLOCK = 1 << 20


def tail_offset(fd: int, n: int, end: int | None = None, block: int = BLOCK) -> tuple[int, int]:
    """(start, end): the byte range of the last `n` lines of `fd[:end]` (end clamped to the file).
    A final newline ends the last line; it does not start an empty one."""
    size = os.fstat(fd).st_size
    end = size if end is None else max(0, min(end, size))
    if n <= 0 or end == 0:
        return end, end
    # the newline that ends the file does not count: look for n newlines before it
    limit = end - 1 if os.pread(fd, 1, end - 1) == b"\n" else end
    pos, wanted = limit, n
    while pos > 0:
        step = min(block, pos)
        start = pos - step
        data = os.pread(fd, step, start)
        found = data.count(b"\n")
        if found >= wanted:
            cut = len(data)
            for _ in range(wanted):
                cut = data.rfind(b"\n", 0, cut)
            return start + cut + 1, end
        wanted -= found
        pos = start
    return 0, end


def last_lines(path: str, n: int, end: int | None = None, block: int = BLOCK) -> list[bytes]:
    """The last `n` lines (without newlines) of `path[:end]`; [] if the file is missing."""
    if n <= 0:
        return []
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return []
    try:
        start, stop = tail_offset(fd, n, end, block)
        data = _pread_all(fd, start, stop)
    finally:
        os.close(fd)
    if not data:
        return []
    if data.endswith(b"\n"):
        data = data[:-1]  # a file holding just "\n" has one (empty) line
    return data.split(b"\n")


def tail_range(path: str, n: int, end: int | None = None) -> tuple[int, int]:
    """(start, end) of the last `n` lines of `path[:end]`; (0, 0) if the file is missing."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0, 0
    try:
        return tail_offset(fd, n, end)
    finally:
        os.close(fd)


def iter_range(path: str, start: int, end: int | None, block: int = BLOCK):  # -> Iterator[bytes]
    """Bytes [start, end) of `path` in blocks of at most `block` bytes (nothing if missing)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        end = os.fstat(fd).st_size if end is None else end
        pos = start
        while pos < end:
            chunk = os.pread(fd, min(block, end - pos), pos)
            if not chunk:
                break
            yield chunk
            pos += len(chunk)
    finally:
        os.close(fd)


def _pread_all(fd: int, start: int, stop: int) -> bytes:
    parts = []
    pos = start
    while pos < stop:
        chunk = os.pread(fd, min(BLOCK, stop - pos), pos)
        if not chunk:
            break
        parts.append(chunk)
        pos += len(chunk)
    return b"".join(parts)


def copy_range(path: str, start: int, end: int | None, out_fd: int, block: int = BLOCK) -> int:
    """Write bytes [start, end) of `path` to `out_fd`; returns the end offset reached."""
    pos = start
    for chunk in iter_range(path, start, end, block):
        write_all(out_fd, chunk)
        pos += len(chunk)
    return pos


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data`; on a non-blocking `fd` that is full, wait until it takes more."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            import select

            p = select.poll()
            p.register(fd, select.POLLOUT)
            p.poll()
            continue
        view = view[n:]
