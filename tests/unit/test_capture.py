"""Stored output of one stream: bounded, its tail kept, and followers' offsets true to the file."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from runtools.output.capture import StreamCapture, parse_size


class Follow:
    """Keeps the offset the way the run's control endpoint does (output: +len; rebase: =end)."""

    def __init__(self) -> None:
        self.offset = 0

    def output(self, _stream: str, data: bytes) -> None:
        self.offset += len(data)

    def rebase(self, _stream: str, end: int) -> None:
        self.offset = end


@settings(max_examples=150, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=300).map(lambda b: b.replace(b"\0", b"\n")), max_size=60),
    limit=st.integers(min_value=0, max_value=2000),
)
def test_the_stored_file_is_a_bounded_tail_and_offsets_match_it(tmp_path_factory, chunks, limit):
    path = str(tmp_path_factory.mktemp("c") / "out")
    follow = Follow()
    cap = StreamCapture("stdout", path, None, None, follow.output, limit=limit, floor=0,
                        on_rebase=follow.rebase)
    fed = b""
    for chunk in chunks:
        assert cap.feed(chunk)
        fed += chunk
        size = os.path.getsize(path)
        assert follow.offset == size  # a follower joining now reads the file up to its end
        with open(path, "rb") as f:
            stored = f.read()
        assert fed.endswith(stored)
        if not limit or len(fed) <= limit:
            assert stored == fed
        else:
            assert len(stored) <= max(limit, len(chunk))
            assert len(stored) >= min(len(fed), (limit // 2) * 3 // 4)
    cap.close()
    assert (cap.warnings != []) == (bool(limit) and len(fed) > limit)


def test_sizes():
    assert [parse_size(x) for x in ("0", "512", "512K", "100M", "2G", "1.5k", "10MiB", "3kb")] == [
        0, 512, 512 << 10, 100 << 20, 2 << 30, 1536, 10 << 20, 3 << 10]
