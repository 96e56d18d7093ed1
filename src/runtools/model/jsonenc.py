"""JSON encoding without importing `json` (which drags in `re`): `run job` writes JSON rows
on its hot path but never needs to parse one. Output is what `json.dumps` would produce:
`dumps(v)` that of `json.dumps(v, separators=(",", ":"))`, `dumps(v, indent=2)` that of
`json.dumps(v, indent=2)`.

`loads` parses with the C scanner of `_json` (the one `json.loads` uses) without importing
`json.decoder` and its regular expressions.
"""

from __future__ import annotations

from _json import encode_basestring_ascii as _str

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def dumps(value: object, indent: int | None = None) -> str:
    out: list[str] = []
    if indent is None:
        _encode(value, out.append)
    else:
        _encode_indented(value, out.append, " " * indent, "\n")
    return "".join(out)


def _key(k: object) -> str:
    if isinstance(k, str):
        return k
    if k is None:
        return "null"
    if isinstance(k, bool):
        return "true" if k else "false"
    if isinstance(k, float):
        return _float(k)
    if isinstance(k, int):
        return int.__repr__(k)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(k).__name__}")


def _float(o: float) -> str:
    if o != o:
        return "NaN"
    if o in (float("inf"), float("-inf")):
        return "Infinity" if o > 0 else "-Infinity"
    return float.__repr__(o)


def _encode(o: object, w) -> None:
    if o is None:
        w("null")
    elif o is True:
        w("true")
    elif o is False:
        w("false")
    elif isinstance(o, str):
        w(_str(o))
    elif isinstance(o, int):
        w(int.__repr__(o))
    elif isinstance(o, float):
        w(_float(o))
    elif isinstance(o, list | tuple):
        w("[")
        first = True
        for x in o:
            if not first:
                w(",")
            first = False
            _encode(x, w)
        w("]")
    elif isinstance(o, dict):
        w("{")
        first = True
        for k, v in o.items():
            if not first:
                w(",")
            first = False
            if not isinstance(k, str):
                k = "null" if k is None else str(k).lower() if isinstance(k, bool) else str(k)
            w(_str(k))
            w(":")
            _encode(v, w)
        w("}")
    else:
        raise TypeError(f"cannot encode {type(o).__name__} as JSON")


def _encode_indented(o: object, w, step: str, nl: str) -> None:
    """json.dumps(o, indent=len(step)): items on their own lines, `": "` after keys, empty
    containers as `[]`/`{}`."""
    if isinstance(o, list | tuple):
        if not o:
            w("[]")
            return
        inner = nl + step
        w("[")
        first = True
        for x in o:
            w(inner if first else "," + inner)
            first = False
            _encode_indented(x, w, step, inner)
        w(nl + "]")
    elif isinstance(o, dict):
        if not o:
            w("{}")
            return
        inner = nl + step
        w("{")
        first = True
        for k, v in o.items():
            w(inner if first else "," + inner)
            first = False
            w(_str(_key(k)))
            w(": ")
            _encode_indented(v, w, step, inner)
        w(nl + "}")
    else:
        _encode(o, w)


class _Context:
    """What `_json.make_scanner` reads from a JSONDecoder, with json.loads' defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}.__getitem__
    memo: dict = {}


_scan = None
_WS = " \t\n\r"


def loads(s: str | bytes) -> Any:
    """`json.loads(s)` for a document (raises ValueError on invalid input)."""
    global _scan
    if _scan is None:
        from _json import make_scanner

        _scan = make_scanner(_Context())  # type: ignore[arg-type]  # duck-typed like JSONDecoder
    if isinstance(s, bytes | bytearray):
        s = s.decode()
    start = len(s) - len(s.lstrip(_WS))
    try:
        value, end = _scan(s, start)
    except StopIteration as e:
        raise ValueError(f"Expecting value: char {e.value}") from None
    except SystemError:  # some malformed input trips the bare scanner: let json say what is wrong
        import json

        return json.loads(s)
    if s[end:].strip(_WS):
        raise ValueError(f"Extra data: char {end}")
    return value
