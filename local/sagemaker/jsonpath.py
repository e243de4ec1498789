"""SageMaker Batch Transform's JSONPath subset, for CSV rows.

For CSV input SageMaker treats each row as a JSON array, so only index
expressions apply: ``$`` (the whole row), ``$[i]``, ``$[i,j,...]`` and slices
``$[a:b]``, ``$[a:]``, ``$[:b]``, mixed as in ``$[0,5:]``.  Negative indexes
count from the end.  Unlike Python, slices are END-INCLUSIVE: the developer
guide ("Associate Prediction Results with Input Records") says ``$[1:4]``
selects the second through fifth columns and ``$[:5]`` the first through the
sixth.  An index outside the row is an error, as SageMaker's is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_INT = r"-?\d+"
_ITEM = re.compile(rf"^\s*(?:(?P<index>{_INT})|(?P<start>{_INT})?\s*:\s*(?P<end>{_INT})?|\*)\s*$")


class JsonPathError(ValueError):
    """Raised when an expression is not a supported CSV JSONPath or does not fit a row."""


@dataclass(frozen=True)
class CsvPath:
    """A parsed expression; ``None`` items mean the whole row (``$``)."""

    text: str
    items: tuple[tuple[int | None, int | None, bool], ...] | None

    def select(self, row: list[str]) -> list[str]:
        """Pick the expression's columns from one row.

        Raises
        ------
        JsonPathError
            An index outside the row.

        Example
        -------
        >>> parse("$[1:2]").select(["a", "b", "c", "d"])
        ['b', 'c']
        """
        if self.items is None:
            return list(row)
        n = len(row)
        out: list[str] = []
        for start, end, is_slice in self.items:
            if not is_slice:
                i = _absolute(start, n, self.text)
                out.append(row[i])
                continue
            first = 0 if start is None else _absolute(start, n, self.text)
            last = n - 1 if end is None else _absolute(end, n, self.text)
            out.extend(row[first : last + 1])
        return out


def _absolute(index: int | None, n: int, text: str) -> int:
    assert index is not None
    i = index + n if index < 0 else index
    if not 0 <= i < n:
        raise JsonPathError(f"JSONPath {text}: index {index} is outside a record of {n} columns")
    return i


def parse(text: str | None) -> CsvPath:
    """Parse a CSV JSONPath (``None`` or ``$`` select the whole row).

    Raises
    ------
    JsonPathError
        Anything but ``$`` or ``$[...]`` with indexes and slices, e.g. ``$.features``.
    """
    expr = (text or "$").strip()
    if expr in ("$", "$[*]", "$.*"):
        return CsvPath(expr, None)
    if not (expr.startswith("$[") and expr.endswith("]")):
        raise JsonPathError(
            f"JSONPath {expr} cannot select CSV columns: use index expressions such as "
            "$[0], $[1:], $[0,2,-1]"
        )
    items: list[tuple[int | None, int | None, bool]] = []
    for piece in expr[2:-1].split(","):
        match = _ITEM.match(piece)
        if match is None:
            raise JsonPathError(f"JSONPath {expr}: cannot parse '{piece.strip()}'")
        if match.group("index") is not None:
            items.append((int(match.group("index")), None, False))
        elif piece.strip() == "*":
            items.append((None, None, True))
        else:
            start, end = match.group("start"), match.group("end")
            items.append(
                (None if start is None else int(start), None if end is None else int(end), True)
            )
    return CsvPath(expr, tuple(items))
