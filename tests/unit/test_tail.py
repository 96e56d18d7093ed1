"""Reading stored output backwards: exact, and linear in what it returns."""

from __future__ import annotations

import os
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from runtools.output.tail import copy_range, last_lines, tail_range


def naive(data: bytes, n: int) -> list[bytes]:
    if n <= 0 or not data:
        return []
    if data.endswith(b"\n"):
        data = data[:-1]
    return data.split(b"\n")[-n:]


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\n\n", b"xyz\n"]), max_size=40).map(b"".join),
    n=st.integers(min_value=0, max_value=12),
    block=st.integers(min_value=1, max_value=9),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=200)),
)
def test_last_lines_equals_the_naive_split(tmp_path_factory, data, n, block, cut):
    path = tmp_path_factory.mktemp("t") / "out"
    path.write_bytes(data)
    view = data if cut is None else data[:cut]
    assert last_lines(str(path), n, cut, block=block) == naive(view, n)


def test_missing_file_is_empty(tmp_path):
    assert last_lines(str(tmp_path / "nope"), 3) == []
    assert tail_range(str(tmp_path / "nope"), 3) == (0, 0)


def test_one_50mb_line_tails_in_well_under_a_second(tmp_path):
    path = tmp_path / "big"
    line = b"x" * (50 * 1024 * 1024)
    path.write_bytes(b"first\n" + line + b"\n")
    t0 = time.perf_counter()
    start, end = tail_range(str(path), 1)
    out = os.open(os.devnull, os.O_WRONLY)
    try:
        copy_range(str(path), start, end, out)
    finally:
        os.close(out)
    elapsed = time.perf_counter() - t0
    assert (start, end) == (6, len(line) + 7)
    assert elapsed < 1.0, elapsed


def test_many_lines_cost_one_pass(tmp_path):
    path = tmp_path / "many"
    path.write_bytes(b"".join(b"%d\n" % i for i in range(1_000_000)))
    t0 = time.perf_counter()
    lines = last_lines(str(path), 500_000)
    elapsed = time.perf_counter() - t0
    assert len(lines) == 500_000 and lines[0] == b"500000" and lines[-1] == b"999999"
    assert elapsed < 1.0, elapsed
