"""runtools.model.jsonenc: byte-identical to `json` for the values runtools writes and reads."""

from __future__ import annotations

import json
import math

import pytest

from runtools.model.jsonenc import dumps, loads

VALUES = [
    None, True, False, 0, -1, 2**70, 1.5, -0.0, 1e-7, 1e300, "", "plain", "é ü ß", "日本語 ☃ 😀",
    "quote \" backslash \\ slash / controls \n\t\r\b\f \x00 \x1f \x7f", [], {}, [[]], [{}], {"a": []},
    {"a": {}}, {"a": [[], {}, [[]], {"b": {}}]}, [1, [2, [3, []]], {"x": None}],
    {"job_id": "3f2a", "command": ["/bin/echo", "ünï"], "pid": None, "strict": False, "attempt_no": 3,
     "items": [{"job_id": "x", "selected_at": 1746032742, "selected_at_iso": "2026-05-01T02:05:42+09:00"}]},
    ("tuple", 1), {"nested": {"deeper": {"deepest": ["a", {"k": "v"}]}}}, {1: "int key", 2.5: "float key"},
    {None: 1, True: 2, False: 3},
]


@pytest.mark.parametrize("value", VALUES)
def test_indent_2_matches_json_dumps(value: object) -> None:
    assert dumps(value, indent=2) == json.dumps(value, indent=2)


@pytest.mark.parametrize("value", VALUES)
def test_other_indents_match_json_dumps(value: object) -> None:
    assert dumps(value, indent=0) == json.dumps(value, indent=0)
    assert dumps(value, indent=4) == json.dumps(value, indent=4)


@pytest.mark.parametrize("value", VALUES)
def test_compact_matches_json_dumps(value: object) -> None:
    assert dumps(value) == json.dumps(value, separators=(",", ":"))


def test_non_finite_floats_match_json_dumps() -> None:
    value = {"nan": math.nan, "inf": [math.inf, -math.inf]}
    assert dumps(value, indent=2) == json.dumps(value, indent=2)
    assert dumps(value) == json.dumps(value, separators=(",", ":"))


def test_unencodable_values_raise_type_error() -> None:
    with pytest.raises(TypeError):
        dumps({"a": object()}, indent=2)
    with pytest.raises(TypeError):
        dumps({(1, 2): "tuple key"}, indent=2)


@pytest.mark.parametrize("value", VALUES)
def test_loads_matches_json_loads(value: object) -> None:
    for text in (json.dumps(value), json.dumps(value, indent=2), dumps(value), "  " + json.dumps(value) + "\n"):
        assert loads(text) == json.loads(text)
        assert loads(text.encode()) == json.loads(text)


def test_loads_constants_and_duplicates_like_json() -> None:
    text = '{"a": NaN, "b": Infinity, "c": -Infinity, "d": 1, "d": 2}'
    got = loads(text)
    assert math.isnan(got["a"]) and got["b"] == math.inf and got["c"] == -math.inf and got["d"] == 2


@pytest.mark.parametrize("text", ["", "   ", "[1", "1 2", "x", '{"a" 1}', "[1,]", '"\x01"', "{} {}"])
def test_loads_rejects_what_json_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        loads(text)
