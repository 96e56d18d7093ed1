"""JSON encoding without importing `json` (which drags in `re`): `run job` writes JSON rows
on its hot path but never needs to parse one. Output is what `json.dumps` would produce."""

from __future__ import annotations

from _json import encode_basestring_ascii as _str


def dumps(value: object) -> str:
    out: list[str] = []
    _encode(value, out.append)
    return "".join(out)


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
        if o != o:
            w("NaN")
        elif o in (float("inf"), float("-inf")):
            w("Infinity" if o > 0 else "-Infinity")
        else:
            w(float.__repr__(o))
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
