"""How a message shows what it found when that is long: a value by its first characters and
its length, a list by its first items and how many more.

Every reason and notice ends up in an EventBridge event (256 KB for the whole event) and in
front of a person: one 2.6 MB cell, or 30,000 ids, made a reason that could be neither sent
nor read. One form for each, so every message cuts alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

LISTED = 5  # items a message names before saying how many more
ITEM_CHARS = 60  # of each item shown


def cut(text: str, limit: int, *, quote: bool = False) -> str:
    """`text` whole if it has at most `limit` characters, else its first `limit` and its
    length. `quote`: Python-quoted, so that spaces, tabs and empty text can be seen.

    Example
    -------
    >>> cut("abcdef", 3), cut("abc", 3, quote=True), cut("abcdef", 3, quote=True)
    ('abc... (6 chars)', "'abc'", "'abc'... (6 chars)")
    """
    short = len(text) <= limit
    head = text if short else text[:limit]
    shown = repr(head) if quote else head
    return shown if short else f"{shown}... ({len(text):,} chars)"


def listed(
    items: Iterable[object], limit: int = LISTED, show: Callable[[Any], str] | None = None
) -> str:
    """The items, comma-separated; past `limit` of them, the first `limit` and how many more.
    Each shown item is `show(item)`, by default its text cut to `ITEM_CHARS` (a column name
    can be a whole stray-quoted file). Only the shown items are copied or shown: a list may
    be millions long.

    Example
    -------
    >>> listed(["a", "b"], 3), listed(range(1, 8), 3), listed(iter("abcd"), 2)
    ('a, b', '1, 2, 3 and 4 more', 'a, b and 2 more')
    """
    try:
        count, first = len(items), list(items[:limit])  # type: ignore[arg-type,index]
    except TypeError:  # an iterator (or a set): counted as it goes
        first, count = [], 0
        for item in items:
            if count < limit:
                first.append(item)
            count += 1
    shown = map(show or (lambda item: cut(str(item), ITEM_CHARS)), first)
    more = f" and {count - limit:,} more" if count > limit else ""
    return ", ".join(shown) + more
