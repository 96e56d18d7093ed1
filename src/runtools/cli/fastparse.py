"""An argparse stand-in for the `taro` verbs: records `add_argument` calls, parses the plain
cases itself, and hands everything else (`--help`, errors, unusual input) to a real argparse
parser built from the same calls — so help, error messages and exit code 2 are argparse's own,
while `taro ps` does not pay ~8 ms of argparse imports (argparse pulls in re, gettext, shutil).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any


class _Fallback(Exception):
    """The fast path does not handle this input: let argparse parse it."""


class Namespace:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)

    def __repr__(self) -> str:
        return f"Namespace({self.__dict__!r})"


class FastParser:
    """Subset of `argparse.ArgumentParser`: flags with store_true / store / append, type=int|str,
    choices and defaults; positionals; argument groups. Anything else goes to argparse."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        self._args, self._kw = args, kw
        self._calls: list[tuple[str, tuple, dict]] = []  # (group title or "", args, kwargs)
        self._group = ""
        self._options: dict[str, dict] = {}
        self._positionals: list[dict] = []
        self._unsupported = False
        self._real: argparse.ArgumentParser | None = None  # once a verb uses more of argparse

    def __getattr__(self, name: str) -> Any:
        """Any other argparse feature (subparsers, ...): from here on, this is plain argparse."""
        if name.startswith("_"):
            raise AttributeError(name)
        if self._real is None:
            self._real = self.argparse()
        return getattr(self._real, name)

    # -- recording (the argparse API our verbs use) ----------------------------------------------

    def add_argument(self, *flags: str, **kw: Any) -> Any:
        if self._real is not None:
            return self._real.add_argument(*flags, **kw)
        self._calls.append((self._group, flags, kw))
        action = kw.get("action", "store")
        if action not in ("store", "store_true", "append") or kw.get("type") not in (None, int, str):
            self._unsupported = True
        if flags and flags[0].startswith("-"):
            long = next((f for f in flags if f.startswith("--")), flags[0])
            spec = {**kw, "action": action, "dest": kw.get("dest") or long.lstrip("-").replace("-", "_")}
            for f in flags:
                self._options[f] = spec
        else:
            if kw.get("nargs") not in (None, "*", "+", "?"):
                self._unsupported = True
            self._positionals.append({**kw, "dest": kw.get("dest") or flags[0]})

    def add_argument_group(self, title: str | None = None, description: str | None = None) -> Any:
        if self._real is not None:
            return self._real.add_argument_group(title, description)
        return _Group(self, title or "")

    def add_mutually_exclusive_group(self, **kw: Any) -> Any:
        return self.__getattr__("add_mutually_exclusive_group")(**kw)

    # -- parsing ---------------------------------------------------------------------------------

    def parse_args(self, argv: list[str]) -> Any:
        if self._real is not None:
            return self._real.parse_args(argv)
        if not self._unsupported:
            try:
                return self._parse(argv)
            except _Fallback:
                pass
        return self.argparse().parse_args(argv)

    def argparse(self) -> argparse.ArgumentParser:
        from runtools.cli.common import ArgParser

        p = ArgParser(*self._args, **self._kw)
        groups: dict[str, Any] = {"": p}
        for title, flags, kw in self._calls:
            g = groups.get(title) or groups.setdefault(title, p.add_argument_group(title))
            g.add_argument(*flags, **kw)
        return p

    def _parse(self, argv: list[str]) -> Namespace:
        values: dict[str, Any] = {}
        for spec in self._options.values():
            a = spec["action"]
            default = spec.get("default", False if a == "store_true" else None)
            values[spec["dest"]] = list(default) if isinstance(default, list) else default
        free: list[str] = []
        block_ended = False  # positionals must come in one run, or argparse has its own ideas
        i = 0
        while i < len(argv):
            arg = argv[i]
            if arg == "--":
                if block_ended or free:
                    raise _Fallback
                free.extend(argv[i + 1 :])
                break
            if arg.startswith("-") and arg != "-" and not _negative_number(arg):
                block_ended = bool(free)
                name, eq, inline = arg.partition("=")
                found = self._options.get(name)
                if found is None or name in ("-h", "--help"):
                    raise _Fallback
                spec = found
                if spec["action"] == "store_true":
                    if eq:
                        raise _Fallback
                    values[spec["dest"]] = True
                    i += 1
                    continue
                if eq:
                    value = inline
                elif i + 1 < len(argv) and not (argv[i + 1].startswith("-") and argv[i + 1] != "-"):
                    value = argv[i + 1]
                    i += 1
                else:
                    raise _Fallback
                value = _convert(spec, value)
                if spec["action"] == "append":
                    if values[spec["dest"]] is None:
                        values[spec["dest"]] = []
                    values[spec["dest"]].append(value)
                else:
                    values[spec["dest"]] = value
                i += 1
                continue
            if block_ended:
                raise _Fallback
            free.append(arg)
            i += 1
        self._assign(free, values)
        return Namespace(**values)

    def _assign(self, free: list[str], values: dict[str, Any]) -> None:
        pos = self._positionals
        if not pos:
            if free:
                raise _Fallback
            return
        if len(pos) > 1:
            raise _Fallback
        spec = pos[0]
        nargs = spec.get("nargs")
        if nargs in ("*", "+"):
            if nargs == "+" and not free:
                raise _Fallback
            values[spec["dest"]] = [_convert(spec, v) for v in free]
        elif nargs == "?":
            if len(free) > 1:
                raise _Fallback
            values[spec["dest"]] = _convert(spec, free[0]) if free else spec.get("default")
        else:
            if len(free) != 1:
                raise _Fallback
            values[spec["dest"]] = _convert(spec, free[0])


class _Group:
    def __init__(self, parser: FastParser, title: str) -> None:
        self.parser, self.title = parser, title

    def add_argument(self, *flags: str, **kw: Any) -> None:
        saved, self.parser._group = self.parser._group, self.title
        try:
            self.parser.add_argument(*flags, **kw)
        finally:
            self.parser._group = saved


def _negative_number(arg: str) -> bool:
    try:
        float(arg)
    except ValueError:
        return False
    return True


def _convert(spec: dict, value: str) -> Any:
    """The value as argparse would convert it; _Fallback for anything argparse must refuse
    (so its parser, `cli.common.ArgParser`, names the option): an empty string, a number
    that is not whole or out of range, a value outside `choices`."""
    if value == "" or not value.isascii():  # argparse's parser checks emptiness and UTF-8
        raise _Fallback
    if spec.get("type") is int:
        from runtools.cli.common import MAX_COUNT

        try:
            value = int(value)  # type: ignore[assignment]
        except ValueError:
            raise _Fallback from None
        if not -MAX_COUNT <= value <= MAX_COUNT:  # type: ignore[operator]
            raise _Fallback
    choices = spec.get("choices")
    if choices is not None and value not in choices:
        raise _Fallback
    return value
