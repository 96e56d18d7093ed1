"""A tiny string enumeration: `enum` costs milliseconds to import and `run job` pays every one.

Members are `str` instances (so they compare, hash and JSON-encode as their names), unique
(`Status("FAILED") is Status.FAILED`), iterable (`for s in Status`), with `.value`/`.name`.
"""

from __future__ import annotations


class _NamesMeta(type):
    _members: dict[str, Names]
    def __iter__(cls):
        return iter(cls._members.values())

    def __len__(cls) -> int:
        return len(cls._members)

    def __contains__(cls, item: object) -> bool:
        return item in cls._members

    @property
    def __members__(cls) -> dict:
        return dict(cls._members)


class Names(str, metaclass=_NamesMeta):
    """Subclass, then list members as `NAME = "NAME"` class attributes."""

    _members: dict[str, Names]
    __slots__ = ()

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls._members = {}
        for key, value in list(vars(cls).items()):
            if key.isupper() and isinstance(value, str):
                member = str.__new__(cls, value)
                cls._members[value] = member
                setattr(cls, key, member)

    def __new__(cls, value: str) -> Names:
        try:
            return cls._members[value]
        except KeyError:
            raise ValueError(f"{value!r} is not a valid {cls.__name__}") from None

    def __getnewargs__(self) -> tuple[str]:
        return (str(self),)

    def __reduce__(self) -> tuple:
        return (type(self), (str(self),))

    def __copy__(self) -> Names:
        return self

    def __deepcopy__(self, memo: dict) -> Names:
        return self

    @property
    def value(self) -> str:
        return str.__str__(self)

    @property
    def name(self) -> str:
        return str.__str__(self)

    def __str__(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{str.__str__(self)}"
