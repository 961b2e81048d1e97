"""Line numbers for the keys of a TOML file, for error messages.

:mod:`tomllib` reports the line of a syntax error but returns plain data, so a file that
parses but holds a bad value (an unknown key, ``min`` > ``max``) would be reported without a
line. :class:`LineIndex` finds it again: one pass over the text that records the first line of
every table header and every ``key = value``, by full dotted path. It reads the common shapes
(``[apps.hello]``, ``[apps."hello"]``, dotted keys, inline tables on one line); for anything
cleverer it falls back to the nearest enclosing table, or to no line at all.
"""

from __future__ import annotations

import re

__all__ = ["LineIndex"]

_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"' + r"|'[^']*'"
_KEY = rf"(?:{_BARE}|{_QUOTED})"
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER = re.compile(rf"^\s*\[\[?\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_ASSIGN = re.compile(rf"^\s*({_DOTTED})\s*=")
_INLINE = re.compile(rf"({_KEY})\s*=")
_PART = re.compile(_KEY)


def _parts(dotted: str) -> tuple[str, ...]:
    out = []
    for match in _PART.finditer(dotted):
        part = match.group(0)
        if part[0] in "\"'":
            part = part[1:-1]
        out.append(part)
    return tuple(out)


class LineIndex:
    """The first line (1-based) of each table and key path of a TOML text.

    Args:
        text: The file's text.
    """

    def __init__(self, text: str) -> None:
        self._lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        for number, line in enumerate(text.splitlines(), start=1):
            header = _HEADER.match(line)
            if header:
                table = _parts(header.group(1))
                self._note(table, number)
                continue
            assign = _ASSIGN.match(line)
            if not assign:
                continue
            path = table + _parts(assign.group(1))
            self._note(path, number)
            rest = line[assign.end():]
            if rest.lstrip().startswith("{"):  # an inline table: its keys are on this line
                for key in _INLINE.finditer(rest):
                    self._note((*path, *_parts(key.group(1))), number)

    def _note(self, path: tuple[str, ...], number: int) -> None:
        for end in range(1, len(path) + 1):
            self._lines.setdefault(path[:end], number)

    def line(self, *path: str) -> int | None:
        """The line of ``path`` (e.g. ``"apps", "hello", "min"``), else of the nearest
        enclosing table or key that has one, else ``None``."""
        for end in range(len(path), 0, -1):
            found = self._lines.get(tuple(path[:end]))
            if found is not None:
                return found
        return None
