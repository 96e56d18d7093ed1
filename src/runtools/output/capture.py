"""Capture of one output stream: to the terminal as is, to storage, to live followers.

Memory stays bounded whatever the volume: data moves in chunks, and only the current
partial line (capped) is kept for progress parsing and output warnings. Disk use is bounded
too: a stream's stored file keeps its tail once it passes the output limit, and storing stops
(with a warning) when its filesystem runs low; the terminal keeps getting everything.
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
#: default bound of one stream's stored output (`--output-limit`, $RUNTOOLS_OUTPUT_LIMIT)
DEFAULT_LIMIT = 1 << 30
LIMIT_ENV = "RUNTOOLS_OUTPUT_LIMIT"
#: storing stops when the filesystem has less free than this ($RUNTOOLS_OUTPUT_FLOOR);
#: by default the smaller of 256 MiB and 1% of the filesystem
DEFAULT_FLOOR = 256 << 20
FLOOR_ENV = "RUNTOOLS_OUTPUT_FLOOR"
SPACE_CHECK_EVERY = 4 << 20
_ALIGN_WINDOW = 64 * 1024
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str, what: str = "size") -> int:
    """Bytes from `512`, `512K`, `100M`, `2G`, `1T` (powers of 1024; `KB`/`KiB` accepted)."""
    from runtools.errors import UsageError

    s = text.strip().lower().removesuffix("ib").removesuffix("b")
    num, unit = (s[:-1], s[-1]) if s and s[-1] in "kmgt" else (s, "")
    try:
        value = float(num) if num.strip() == num and num else -1.0
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise UsageError(f"invalid {what} {text!r}: use bytes or a number with K/M/G/T, e.g. 512K, 100M, 2G")
    size = int(value * _SIZE_UNITS[unit])
    if size > 1 << 60:
        raise UsageError(f"invalid {what} {text!r}: at most 1024P")
    return size


def output_limit(option: str | None = None) -> int:
    """Bytes of stored output kept per stream (0: no limit): the option, else the env var, else 1 GiB."""
    if option is not None:
        return parse_size(option, "--output-limit")
    text = os.environ.get(LIMIT_ENV)
    return DEFAULT_LIMIT if not text else parse_size(text, f"${LIMIT_ENV}")


def output_floor() -> int | None:
    """Free bytes below which storing stops (0: never); None: the default for the filesystem."""
    text = os.environ.get(FLOOR_ENV)
    return None if not text else parse_size(text, f"${FLOOR_ENV}")


def human_size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    x = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        x /= 1024
        if x < 1024 or unit == "TiB":
            break
    return f"{x:.0f} {unit}" if x == int(x) else f"{x:.1f} {unit}"


class StreamCapture:
    """One stream: `feed` forwards, stores and parses a chunk; False when its reader is gone."""

    def __init__(
        self,
        name: str,
        path: str | None,
        term_fd: int | None,
        on_line: Callable[[str, bytes], None] | None,
        on_chunk: Callable[[str, bytes], None] | None = None,
        all_lines: bool = False,
        *,
        limit: int = DEFAULT_LIMIT,
        floor: int | None = None,
        on_rebase: Callable[[str, int], None] | None = None,
    ) -> None:
        self.name = name
        # owner-only, like everything else in the environment (0600 whatever the umask)
        self.fd: int | None = None
        self.stored = 0  # size of the stored file (we are its only writer)
        if path:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self.stored = os.lseek(self.fd, 0, os.SEEK_END)
        self.term_fd = term_fd
        self.on_line = on_line
        self.on_chunk = on_chunk
        self.on_rebase = on_rebase
        self.all_lines = all_lines  # every line matters (output warnings), not only `key=` ones
        self.limit = limit
        self.floor = floor
        self.next_space_check = 0
        self.dropped = 0  # bytes cut from the front of the stored file to respect the limit
        self.partial = b""
        self.bytes = 0
        self.warnings: list[str] = []  # for the run, taken by the program phase (each said once)

    def feed(self, data: bytes) -> bool:
        """Forward, store, parse. False: the reader of our terminal fd went away (EPIPE), so
        the caller should close the stream, letting the command see it as it would bare."""
        self.bytes += len(data)
        alive = True
        if self.term_fd is not None:
            try:
                write_all(self.term_fd, data)
            except OSError:  # reader of our stdout went away
                self.term_fd = None
                alive = False
        if self.fd is not None:
            self._store(data)
        if self.on_chunk is not None:
            self.on_chunk(self.name, data)
        if self.fd is not None and self.limit and self.stored > self.limit:
            self._keep_tail()
        if self.on_line is not None:
            self._lines(data)
        return alive

    def _lines(self, data: bytes) -> None:
        assert self.on_line is not None
        buf = self.partial + data if self.partial else data
        if not self.all_lines and b"=" not in buf:
            self.partial = buf[buf.rfind(b"\n") + 1 :][-MAX_LINE:]
            return
        lines = buf.split(b"\n")
        self.partial = lines.pop()[-MAX_LINE:]
        for line in lines:
            self.on_line(self.name, line[:MAX_LINE])

    # -- storing -------------------------------------------------------------------------------

    def _store(self, data: bytes) -> None:
        assert self.fd is not None
        if self.stored >= self.next_space_check and self.floor != 0:
            self.next_space_check = self.stored + SPACE_CHECK_EVERY
            if not self._space_left():
                return
        try:
            write_all(self.fd, data)
        except OSError as e:
            self._storage_failed(e)
            return
        self.stored += len(data)

    def _space_left(self) -> bool:
        """False (and storing stopped, with a warning) when the filesystem is below the floor."""
        assert self.fd is not None
        try:
            st = os.fstatvfs(self.fd)
        except OSError:
            return True
        free = st.f_bavail * st.f_frsize
        floor = self.floor if self.floor is not None else min(DEFAULT_FLOOR, st.f_blocks * st.f_frsize // 100)
        if free >= floor:
            return True
        self._stop(f"storing {self.name} stopped: {human_size(free)} free on its filesystem, below the floor of "
                   f"{human_size(floor)} (${FLOOR_ENV}); later output was not stored")
        return False

    def _keep_tail(self) -> None:
        """Past the limit: keep the last half of it (from a line start when one is near), moved
        to the front of the file in place. Each byte is moved at most once per limit/2 bytes
        written, so storing stays linear."""
        fd = self.fd
        assert fd is not None
        keep = self.limit // 2
        cut = self.stored - keep
        try:
            head = os.pread(fd, min(_ALIGN_WINDOW, keep // 4), cut)  # keep at least 3/4 of the half
            nl = head.find(b"\n")
            if 0 <= nl < len(head) - 1:
                cut += nl + 1
            src, dst, block = cut, 0, 1 << 20
            while src < self.stored:
                chunk = os.pread(fd, min(block, self.stored - src), src)
                if not chunk:
                    break
                os.pwrite(fd, chunk, dst)
                src += len(chunk)
                dst += len(chunk)
            os.ftruncate(fd, dst)
            os.lseek(fd, dst, os.SEEK_SET)
        except OSError as e:
            self._storage_failed(e)
            return
        if not self.dropped:
            self.warnings.append(
                f"{self.name} passed the stored-output limit of {human_size(self.limit)} (--output-limit): "
                "its start was dropped; the last part is stored"
            )
        self.dropped += cut
        self.next_space_check -= cut
        self.stored = dst
        if self.on_rebase is not None:
            self.on_rebase(self.name, dst)

    def _storage_failed(self, e: OSError) -> None:
        """Stop storing; the output keeps flowing to the terminal and followers. On a full disk,
        give back the tail of what was stored, so the run's own record (its end above all) can
        still be written: a truthful history matters more than the last bytes of output."""
        import errno

        assert self.fd is not None
        msg = f"storing {self.name} failed: {e.strerror}; later output was not stored"
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            try:
                size = os.fstat(self.fd).st_size
                os.ftruncate(self.fd, max(0, size - DISK_FULL_GIVE_BACK))
                msg += f" (disk full: the last {min(size, DISK_FULL_GIVE_BACK) // 1024} KiB stored were " \
                    "dropped to leave room for the run's record)"
            except OSError:
                pass
        self._stop(msg)

    def _stop(self, why: str) -> None:
        self.warnings.append(why)
        self._close_file()

    def take_warnings(self) -> list[str]:
        out, self.warnings = self.warnings, []
        return out

    def close(self) -> None:
        if self.partial and self.on_line is not None:
            self.on_line(self.name, self.partial)
            self.partial = b""
        self._close_file()

    def _close_file(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                os.close(fd)
            except OSError:
                pass


def compile_warnings(patterns: list[str]) -> list[re.Pattern[bytes]]:
    import re

    from runtools.errors import UsageError

    out = []
    for p in patterns:
        try:
            out.append(re.compile(p.encode()))
        except (re.error, OverflowError, RecursionError) as e:  # a{99999999999}: OverflowError
            raise UsageError(f"invalid --output-warn regex {p!r}: {e}") from None
    return out
