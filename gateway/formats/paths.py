"""A small compiled subset of JSONPath for device profiles.

Grammar (compiled once, when a profile loads)::

    path       := root step*
    root       := "$"          the current document (the item, inside an ``each`` template)
                | "$$"         the message root, also from inside an ``each`` item
    step       := "." name     name = one or more of [A-Za-z0-9_-]
                | "[" quoted "]"          'key' or "key"; backslash escapes the quote and itself
                | "[" integer "]"         list index; negative counts from the end
                | "[*]"                   every list item: only as the last step of an ``each`` path

Evaluation is plain dict and list indexing over the values ``orjson`` produces. A step that does
not apply (absent key, index out of range, indexing a number) yields :data:`MISSING`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MISSING",
    "IterationPath",
    "JsonPath",
    "PathSyntaxError",
    "compile_iteration",
    "compile_path",
    "render_steps",
]


class _Missing:
    """Type of :data:`MISSING` (one instance)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()
"""What a path yields when the document has nothing there (distinct from JSON ``null``)."""

Step = str | int
_NAME = re.compile(r"[A-Za-z0-9_\-]+")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*\Z")
_INDEX = re.compile(r"-?[0-9]+")
_WILDCARD: Final = object()


class PathSyntaxError(ValueError):
    """A path expression does not parse.

    Attributes:
        text: The expression.
        offset: Zero-based character offset of the problem.
    """

    def __init__(self, text: str, offset: int, expected: str) -> None:
        super().__init__(f"bad path {text!r}: at offset {offset}: {expected}")
        self.text = text
        self.offset = offset


def render_steps(steps: tuple[Step, ...]) -> str:
    """Steps as path text without the root, e.g. ``.body['a b'][0]``."""
    parts = []
    for step in steps:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif _PLAIN_KEY.match(step):
            parts.append(f".{step}")
        else:
            escaped = step.replace("\\", "\\\\").replace("'", "\\'")
            parts.append(f"['{escaped}']")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class JsonPath:
    """A compiled path.

    Attributes:
        text: The expression as written.
        steps: Keys (str) and list indexes (int), in order.
        from_root: ``True`` for ``$$`` paths, which start at the message root.
        suffix: ``steps`` rendered as text, for naming a field under any prefix.
    """

    text: str
    steps: tuple[Step, ...]
    from_root: bool
    suffix: str

    def get(self, doc: object, root: object = MISSING) -> object:
        """The value at this path, or :data:`MISSING`.

        Args:
            doc: The current document (the item inside an ``each`` template).
            root: The message root, used by ``$$`` paths; defaults to ``doc``.
        """
        cur = root if self.from_root and root is not MISSING else doc
        for step in self.steps:
            if type(cur) is dict:
                cur = cur.get(step, MISSING)  # JSON keys are strings: an int step finds nothing
            elif type(cur) is list and type(step) is int:
                try:
                    cur = cur[step]
                except IndexError:
                    return MISSING
            else:
                return MISSING
        return cur

    def field(self, item_prefix: str = "$") -> str:
        """The JSON path of the field this path reads, as used in rejections.

        Args:
            item_prefix: Where the current item sits in the message (``$.readings[2]``);
                ignored for ``$$`` paths.
        """
        return ("$" if self.from_root else item_prefix) + self.suffix


@dataclass(frozen=True, slots=True)
class IterationPath:
    """A compiled ``each`` path: a :class:`JsonPath` to a list, then ``[*]``.

    Attributes:
        text: The expression as written.
        container: Path to the list that is iterated.
    """

    text: str
    container: JsonPath

    def items(self, doc: object) -> list[object] | None:
        """The list to iterate, or ``None`` when the path does not reach a list."""
        found = self.container.get(doc)
        return found if type(found) is list else None

    def item_field(self, index: int) -> str:
        """The JSON path of item ``index`` (e.g. ``$.readings[2]``)."""
        return f"{self.container.field()}[{index}]"


def _tokens(text: str, pos: int) -> Iterator[tuple[int, Step | object]]:
    """Yield ``(offset, step)`` pairs from ``pos`` on; ``_WILDCARD`` stands for ``[*]``."""
    while pos < len(text):
        ch = text[pos]
        if ch == ".":
            m = _NAME.match(text, pos + 1)
            if m is None:
                raise PathSyntaxError(text, pos + 1, "expected a key name after '.'")
            yield pos, m.group()
            pos = m.end()
        elif ch == "[":
            step, after = _bracket(text, pos + 1)
            yield pos, step
            pos = after
        else:
            raise PathSyntaxError(text, pos, f"expected '.' or '[', found {ch!r}")


def _bracket(text: str, pos: int) -> tuple[Step | object, int]:
    """Parse the bracket step whose content starts at ``pos``; return it and the end offset."""
    ch = text[pos] if pos < len(text) else ""
    if ch == "*":
        return _WILDCARD, _close(text, pos + 1)
    if ch and ch in "'\"":
        key, after = _quoted(text, pos)
        return key, _close(text, after)
    m = _INDEX.match(text, pos)
    if m is None:
        raise PathSyntaxError(text, pos, "expected a quoted key, an integer or '*' after '['")
    return int(m.group()), _close(text, m.end())


def _quoted(text: str, start: int) -> tuple[str, int]:
    """Parse a quoted key at ``start``; return the key and the offset after the closing quote."""
    quote = text[start]
    out: list[str] = []
    pos = start + 1
    while pos < len(text):
        ch = text[pos]
        if ch == "\\":
            if pos + 1 >= len(text) or text[pos + 1] not in ("\\", quote):
                raise PathSyntaxError(text, pos, f"expected \\\\ or \\{quote} after a backslash")
            out.append(text[pos + 1])
            pos += 2
        elif ch == quote:
            return "".join(out), pos + 1
        else:
            out.append(ch)
            pos += 1
    raise PathSyntaxError(text, start, f"unterminated quoted key (missing {quote})")


def _close(text: str, pos: int) -> int:
    if pos >= len(text) or text[pos] != "]":
        raise PathSyntaxError(text, pos, "expected ']'")
    return pos + 1


def _parse(text: str) -> tuple[bool, list[tuple[int, Step | object]]]:
    if not text.startswith("$"):
        raise PathSyntaxError(text, 0, "a path starts with '$' (or '$$' for the message root)")
    from_root = text.startswith("$$")
    return from_root, list(_tokens(text, 2 if from_root else 1))


def _plain(text: str, from_root: bool, steps: list[Step]) -> JsonPath:
    t = tuple(steps)
    return JsonPath(text, t, from_root, render_steps(t))


def compile_path(text: str) -> JsonPath:
    """Compile a path with no ``[*]``.

    Raises:
        PathSyntaxError: Naming the offset of the problem.
    """
    from_root, tokens = _parse(text)
    steps: list[Step] = []
    for offset, step in tokens:
        if step is _WILDCARD:
            raise PathSyntaxError(text, offset, "'[*]' is only allowed in an 'each' path")
        assert isinstance(step, str | int)
        steps.append(step)
    return _plain(text, from_root, steps)


def compile_iteration(text: str) -> IterationPath:
    """Compile an ``each`` path: a ``$`` path ending in ``[*]`` (exactly one ``[*]``).

    Raises:
        PathSyntaxError: Naming the offset of the problem.
    """
    from_root, tokens = _parse(text)
    if from_root:
        raise PathSyntaxError(text, 0, "an 'each' path starts at the message root: use '$'")
    steps: list[Step] = []
    for i, (offset, step) in enumerate(tokens):
        if step is _WILDCARD:
            if i != len(tokens) - 1:
                raise PathSyntaxError(text, offset, "'[*]' may only be the last step of 'each'")
            container_text = text[:offset]
            return IterationPath(text, _plain(container_text, False, steps))
        assert isinstance(step, str | int)
        steps.append(step)
    raise PathSyntaxError(text, len(text), "an 'each' path must end with '[*]'")
