"""Short renderings of lists and values for one-line messages."""

from __future__ import annotations

import json
from collections.abc import Mapping

SHOWN = 3  # items named in a message


def few(items: list, n: int = SHOWN) -> str:
    """The first ``n`` items, and "..." if there are more."""
    return ", ".join(str(i) for i in items[:n]) + (", ..." if len(items) > n else "")


def spread(items: list) -> str:
    """The first, middle and last item: what a long list of names looks like."""
    if len(items) <= SHOWN:
        return ", ".join(str(i) for i in items)
    return " ... ".join(str(items[i]) for i in (0, len(items) // 2, len(items) - 1))


def shown(value, limit: int = 40) -> str | None:
    """``value`` as JSON ("unset" for None) when at most ``limit`` characters, else None (too long
    to show: a weights digest, a list of edges)."""
    text = "unset" if value is None else json.dumps(value)
    return text if len(text) <= limit else None


def differing_keys(a: Mapping, b: Mapping) -> list:
    """The keys whose entries differ between ``a`` and ``b``, sorted (an absent entry differs
    from every value, None included)."""
    absent = object()
    return sorted(k for k in a.keys() | b.keys() if a.get(k, absent) != b.get(k, absent))
