"""How a message shows what it found when that is long: a value by its first characters and
its length, a list by its first items and how many more.

Every reason and notice ends up in an EventBridge event (256 KB for the whole event) and in
front of a person: one 2.6 MB cell, or 30,000 ids, made a reason that could be neither sent
nor read. One form for each, so every message cuts alike.
"""

from __future__ import annotations

from collections.abc import Iterable


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


def listed(items: Iterable[object], limit: int) -> str:
    """The items, comma-separated; past `limit` of them, the first `limit` and how many more.

    Example
    -------
    >>> listed(["a", "b"], 3), listed(range(1, 8), 3)
    ('a, b', '1, 2, 3 and 4 more')
    """
    every = list(items)
    more = f" and {len(every) - limit:,} more" if len(every) > limit else ""
    return ", ".join(map(str, every[:limit])) + more
