"""Plain-text tables for the command line's listings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["cell", "print_table"]


def cell(value: Any, width: int = 90) -> str:
    """One value as table text: ``-`` for none, 6 significant digits, long text cut."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


def print_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, empty: str = "(none)"
) -> None:
    """Rows as an aligned text table on stdout."""
    if not rows:
        print(empty)
        return
    cols = list(columns or rows[0].keys())
    text = [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    for t in text:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip())
