"""EventBridge event-pattern matching, so the local router routes as template.yaml's rules do.

Semantics are the EventBridge user guide's ("Event patterns", "Comparison operators",
"Arrays", "Null values") and, where it is silent, those of Event Ruler, EventBridge's matcher
(github.com/aws/event-ruler). Fields AND together, a field's values OR together; a field
missing from the event matches nothing but ``{"exists": false}``. An event array matches when
any element does, and a nested pattern meets each object of such an array whole (no match
from two different elements). Operators see leaves only: an object or an empty array counts
as absent, ``null`` as a value. Strings never equal numbers, ``true`` never ``1``; ``300``
equals ``3.0e2``. Wildcard ``*`` matches any run, ``/`` included. ``anything-but`` matches
any present leaf the excluded values do not, leaves of another type included. ``cidr``
floors the block (``10.0.0.5/24`` is ``10.0.0.0/24``) and refuses ``/32`` and ``/128``.

Why not moto's own matcher (``moto.events.models.EventPattern``): it differs from these rules
where a rule may meet them. It misses a nested pattern against an array of objects, takes
an empty object for a present field, and lets ``true`` equal ``1`` (checked with moto 5.2).
"""

from __future__ import annotations

import ipaddress
import math
import operator
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

__all__ = ["InvalidEventPatternError", "matches", "validate_pattern"]

_NUMERIC_LIMIT = 5.0e9  # Event Ruler's ComparableNumber range: larger thresholds are refused
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}  # fmt: skip


class InvalidEventPatternError(ValueError):
    """Raised when a pattern is one EventBridge's PutRule would refuse; names the path."""


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether ``event`` (envelope included) matches the EventBridge event ``pattern``.

    Parameters
    ----------
    pattern : Mapping[str, Any]
        An event pattern, as in a rule's ``EventPattern``.
    event : Mapping[str, Any]
        The whole event: ``source``, ``detail-type``, ``detail``...

    Returns
    -------
    bool
        True when every field of the pattern matches.

    Raises
    ------
    InvalidEventPatternError
        If EventBridge would refuse the pattern (see ``validate_pattern``).

    Example
    -------
    >>> matches({"detail": {"key": [{"wildcard": "raw/*.csv"}]}}, {"detail": {"key": "raw/a/b.csv"}})
    True
    """  # noqa: E501
    validate_pattern(pattern)
    return _match_object(pattern, event)


def validate_pattern(pattern: Mapping[str, Any]) -> None:
    """Check ``pattern`` against EventBridge's event-pattern grammar.

    Raises
    ------
    InvalidEventPatternError
        Naming the path, what it expects and what it got, e.g. ``detail.size[0].numeric:
        expected [op, n] or [">" or ">=", low, "<" or "<=", high] ..., got ['<', 1, '>', 0]``.

    Example
    -------
    >>> validate_pattern({"source": ["aws.s3"], "detail": {"size": [{"numeric": [">", 0]}]}})
    """
    _require(isinstance(pattern, Mapping), "", "an event pattern must be a JSON object")
    _check_object(pattern, "")


# --------------------------------------------------------------------------- validation


def _require(condition: bool, path: str, message: str) -> None:
    if not condition:
        raise InvalidEventPatternError(f"{path or '<pattern>'}: {message}")


def _check_object(node: Mapping[str, Any], path: str) -> None:
    _require(bool(node), path, "empty objects are not allowed")
    for key, value in node.items():
        where = f"{path}.{key}" if path else key
        if key == "$or":
            ok = isinstance(value, list) and len(value) > 1
            _require(ok and all(map(_is_object, value)), where, "expected 2+ objects")
            for n, branch in enumerate(value):
                _check_object(branch, f"{where}[{n}]")
        elif isinstance(value, Mapping):
            _check_object(value, where)
        else:
            _require(isinstance(value, list) and bool(value), where, "expected an object or a "
                     f"non-empty array, got {value!r}")  # fmt: skip
            for n, item in enumerate(value):
                _check_value(item, f"{where}[{n}]")


def _check_value(item: Any, path: str) -> None:
    if item is None or isinstance(item, str | bool) or _is_number(item, math.inf):
        return
    known = isinstance(item, Mapping) and len(item) == 1 and next(iter(item)) in _OPERATORS
    _require(known, path, "expected a string, number, boolean, null or one operator of "
             f"{', '.join(_OPERATORS)}, got {item!r}")  # fmt: skip
    ((name, operand),) = item.items()
    form, valid, _ = _OPERATORS[name]
    _require(valid(operand), f"{path}.{name}", f"expected {form}, got {operand!r}")


def _is_object(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_number(value: Any, limit: float = _NUMERIC_LIMIT) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and abs(value) <= limit


def _is_affix(operand: Any) -> bool:
    if isinstance(operand, Mapping) and list(operand) == ["equals-ignore-case"]:
        operand = operand["equals-ignore-case"]
    return isinstance(operand, str)


def _is_wildcard(operand: Any) -> bool:
    return isinstance(operand, str) and _wildcard_runs(operand) is not None


def _is_numeric(operand: Any) -> bool:
    if not isinstance(operand, list) or len(operand) not in (2, 4):
        return False
    if not all(_is_number(bound) for bound in operand[1::2]):
        return False
    if len(operand) == 2:
        return operand[0] in tuple(_COMPARISONS)
    return operand[0] in (">", ">=") and operand[2] in ("<", "<=") and operand[1] < operand[3]


def _is_anything_but(operand: Any) -> bool:
    if isinstance(operand, Mapping):
        name = next(iter(operand), None)
        if len(operand) != 1 or name not in ("prefix", "suffix", "equals-ignore-case", "wildcard"):
            return False
        values = operand[name] if isinstance(operand[name], list) else [operand[name]]
        empty_ok = name == "equals-ignore-case"  # "Null prefix/suffix not allowed"
        valid = _is_wildcard if name == "wildcard" else lambda v: isinstance(v, str)
        return bool(values) and all(valid(v) and (v or empty_ok) for v in values)
    values = operand if isinstance(operand, list) else [operand]
    strings = all(isinstance(v, str) for v in values)
    return bool(values) and (strings or all(_is_number(v) for v in values))


def _network(block: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    address, _, bits = block.partition("/")
    try:
        network = ipaddress.ip_network(f"{address}/{int(bits)}", strict=False)
    except ValueError:
        return None
    return network if network.prefixlen < network.max_prefixlen else None


# --------------------------------------------------------------------------- matching


def _match_object(pattern: Mapping[str, Any], value: Any) -> bool:
    node: Mapping[str, Any] = value if isinstance(value, Mapping) else {}
    for key, expected in pattern.items():
        if key == "$or":
            ok = any(_match_object(branch, node) for branch in expected)
        elif isinstance(expected, Mapping):
            # A missing or non-object value still meets the nested pattern, as nothing:
            # {"detail": {"x": [{"exists": false}]}} matches an event without "detail".
            children = _flat(node.get(key), objects=True) or [{}]
            ok = any(_match_object(expected, child) for child in children)
        else:
            ok = _match_field(expected, _flat(node[key], objects=False) if key in node else [])
        if not ok:
            return False
    return True


def _flat(value: Any, objects: bool) -> list[Any]:
    """The objects (``objects``) or else the leaves in ``value``, arrays flattened."""
    if isinstance(value, list):
        return [item for element in value for item in _flat(element, objects)]
    return [value] if isinstance(value, Mapping) == objects else []


def _match_field(alternatives: list[Any], leaves: list[Any]) -> bool:
    for alternative in alternatives:
        if not isinstance(alternative, Mapping):
            matched = any(_json_equal(alternative, leaf) for leaf in leaves)
        elif "exists" in alternative:
            matched = alternative["exists"] is bool(leaves)
        else:
            ((name, operand),) = alternative.items()
            matched = any(_OPERATORS[name][2](leaf, operand) for leaf in leaves)
        if matched:
            return True
    return False


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b
    return isinstance(a, str) == isinstance(b, str) and a == b


def _affix(leaf: Any, operand: Any, test: Callable[[str, str], bool]) -> bool:
    if not isinstance(leaf, str):
        return False
    if isinstance(operand, Mapping):
        leaf, operand = leaf.lower(), operand["equals-ignore-case"].lower()
    return test(leaf, operand)


def _wildcard(leaf: Any, operand: str) -> bool:
    runs = _wildcard_runs(operand)
    if not isinstance(leaf, str) or runs is None:
        return False
    if len(runs) == 1:
        return leaf == runs[0]
    # Placing each literal run leftmost is exact for "*"-only globs, and linear where a
    # translated regex can backtrack exponentially.
    start, end = len(runs[0]), len(leaf) - len(runs[-1])
    if end < start or not leaf.startswith(runs[0]) or not leaf.endswith(runs[-1]):
        return False
    for run in runs[1:-1]:
        found = leaf.find(run, start, end)
        if found < 0:
            return False
        start = found + len(run)
    return True


def _wildcard_runs(pattern: str) -> list[str] | None:
    """The literal runs between unescaped ``*``; None for ``**`` or an escape but ``\\*``
    or ``\\\\`` (both refused by EventBridge)."""
    runs, current, chars = [], "", iter(enumerate(pattern))
    for i, char in chars:
        if char == "\\":
            current += next(chars, (i, "\0"))[1]
            if current[-1] not in "*\\":
                return None
        elif char == "*":
            if pattern[i + 1 : i + 2] == "*":
                return None
            runs.append(current)
            current = ""
        else:
            current += char
    return [*runs, current]


def _numeric(leaf: Any, operand: list[Any]) -> bool:
    if not _is_number(leaf, math.inf):
        return False
    pairs = zip(operand[::2], operand[1::2], strict=True)
    return all(_COMPARISONS[op](leaf, bound) for op, bound in pairs)


def _cidr(leaf: Any, operand: str) -> bool:
    network = _network(operand)
    try:  # strings only: ip_address() would read the number 167772161 as 10.0.0.1
        address = ipaddress.ip_address(leaf) if isinstance(leaf, str) else None
    except ValueError:
        return False
    return bool(network and address and address.version == network.version and address in network)


def _anything_but(leaf: Any, operand: Any) -> bool:
    if isinstance(operand, Mapping):
        ((name, inner),) = operand.items()
        excluded = inner if isinstance(inner, list) else [inner]
        return not any(_OPERATORS[name][2](leaf, value) for value in excluded)
    excluded = operand if isinstance(operand, list) else [operand]
    return not any(_json_equal(value, leaf) for value in excluded)


def _equals_ignore_case(leaf: Any, operand: str) -> bool:
    return isinstance(leaf, str) and leaf.lower() == operand.lower()


_AFFIX_FORM = 'a string or {"equals-ignore-case": string}'
# operator -> (operand form, for messages; operand check; leaf matcher)
_OPERATORS: dict[str, tuple[str, Callable[[Any], bool], Callable[[Any, Any], bool]]] = {
    "prefix": (_AFFIX_FORM, _is_affix, partial(_affix, test=str.startswith)),
    "suffix": (_AFFIX_FORM, _is_affix, partial(_affix, test=str.endswith)),
    "equals-ignore-case": ("a string", lambda o: isinstance(o, str), _equals_ignore_case),
    "wildcard": ("a string with no ** and no escape but \\* and \\\\", _is_wildcard, _wildcard),
    "anything-but": (
        "a string, a number, an array of only strings or only numbers, or one of prefix, "
        "suffix, equals-ignore-case, wildcard with a string or an array of strings",
        _is_anything_but,
        _anything_but,
    ),
    "numeric": (
        f'[op, n] or [">" or ">=", low, "<" or "<=", high] with low < high, op one of '
        f"{', '.join(_COMPARISONS)}, numbers within +-{_NUMERIC_LIMIT:g}",
        _is_numeric,
        _numeric,
    ),
    "exists": ("true or false", lambda o: isinstance(o, bool), lambda v, o: False),
    "cidr": ("an IP block with a mask shorter than the address, e.g. 10.0.0.0/24",
             lambda o: isinstance(o, str) and _network(o) is not None, _cidr),
}  # fmt: skip
