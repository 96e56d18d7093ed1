"""User text made safe to show: on a terminal (`printable`) and in a suggested command line
(`shell_quote`). For every human-readable output path: tables, messages, hints. Never for
JSON, which is data and stays byte-exact."""

from __future__ import annotations


def printable(text: str) -> str:
    """`text` safe to show on a terminal: control characters (escape sequences, newlines, tabs),
    bidi overrides and undecodable bytes become visible escapes (`\\x1b`, `\\u202e`, `\\udcff`),
    so user text can neither paint the terminal nor forge lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    o = ord(c)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def shell_quote(text: str) -> str:
    """`text` as one shell word, safe to paste into a suggested command line: `'...'` as
    shlex.quote makes it, or bash's `$'...'` with escapes when it has unprintable characters
    (a literal escape sequence must not reach the terminal, nor a newline end the command)."""
    if not text.isprintable():
        out = []
        for c in text:
            if c in "\\'":
                out.append("\\" + c)
            elif c.isprintable():
                out.append(c)
            elif "\udc80" <= c <= "\udcff":  # an undecodable byte of argv (surrogateescape): that byte
                out.append(f"\\x{ord(c) - 0xDC00:02x}")
            elif ord(c) < 0x80:
                out.append(f"\\x{ord(c):02x}")
            else:  # bash writes \u and \U escapes in the locale's encoding (UTF-8)
                out.append(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
        return "$'" + "".join(out) + "'"
    from shlex import quote

    return quote(text)
