"""Capture of one output stream: to the terminal as is, to storage, to live followers.

Memory stays bounded whatever the volume: data moves in chunks, and only the current
partial line (capped) is kept for progress parsing and output warnings.
"""

from __future__ import annotations

import os

from runtools.output.tail import write_all

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Callable

MAX_LINE = 64 * 1024
DISK_FULL_GIVE_BACK = 256 * 1024


class StreamCapture:
    def __init__(
        self,
        name: str,
        path: str | None,
        term_fd: int | None,
        on_line: Callable[[str, bytes], None] | None,
        on_chunk: Callable[[str, bytes], None] | None = None,
        all_lines: bool = False,
    ) -> None:
        self.name = name
        # owner-only, like everything else in the environment (0600 whatever the umask)
        self.file = None
        if path:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self.file = open(fd, "ab", buffering=0)
        self.term_fd = term_fd
        self.on_line = on_line
        self.on_chunk = on_chunk
        self.all_lines = all_lines  # every line matters (output warnings), not only `key=` ones
        self.partial = b""
        self.bytes = 0
        self.store_error: str | None = None  # why storing stopped (e.g. a full disk); output still flows

    def feed(self, data: bytes) -> None:
        self.bytes += len(data)
        if self.term_fd is not None:
            try:
                write_all(self.term_fd, data)
            except OSError:  # reader of our stdout went away: keep storing, stop forwarding
                self.term_fd = None
        if self.file is not None:
            try:
                self.file.write(data)
            except OSError as e:
                self._storage_failed(e)
        if self.on_chunk is not None:
            self.on_chunk(self.name, data)
        if self.on_line is None:
            return
        buf = self.partial + data if self.partial else data
        if not self.all_lines and b"=" not in buf:
            self.partial = buf[buf.rfind(b"\n") + 1 :][-MAX_LINE:]
            return
        lines = buf.split(b"\n")
        self.partial = lines.pop()[-MAX_LINE:]
        for line in lines:
            self.on_line(self.name, line[:MAX_LINE])

    def _storage_failed(self, e: OSError) -> None:
        """Stop storing; the output keeps flowing to the terminal and followers. On a full disk,
        give back the tail of what was stored, so the run's own record (its end above all) can
        still be written: a truthful history matters more than the last bytes of output."""
        import errno

        assert self.file is not None
        self.store_error = f"storing {self.name} failed: {e.strerror}; later output was not stored"
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            try:
                fd = self.file.fileno()
                size = os.fstat(fd).st_size
                os.ftruncate(fd, max(0, size - DISK_FULL_GIVE_BACK))
                self.store_error += f" (disk full: the last {min(size, DISK_FULL_GIVE_BACK) // 1024} KiB stored were " \
                    "dropped to leave room for the run's record)"
            except OSError:
                pass
        self._close_file()

    def close(self) -> None:
        if self.partial and self.on_line is not None:
            self.on_line(self.name, self.partial)
            self.partial = b""
        self._close_file()

    def _close_file(self) -> None:
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass
            self.file = None


def compile_warnings(patterns: list[str]) -> list[re.Pattern[bytes]]:
    import re

    from runtools.errors import UsageError

    out = []
    for p in patterns:
        try:
            out.append(re.compile(p.encode()))
        except re.error as e:
            raise UsageError(f"invalid --output-warn regex {p!r}: {e}") from None
    return out


def term_fd_for(stream: str) -> int | None:
    fd = 1 if stream == "stdout" else 2
    try:
        os.fstat(fd)
    except OSError:
        return None
    return fd
