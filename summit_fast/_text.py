"""Short renderings of long lists for one-line messages."""

from __future__ import annotations

SHOWN = 3  # items named in a message


def few(items: list, n: int = SHOWN) -> str:
    """The first ``n`` items, and "..." if there are more."""
    return ", ".join(str(i) for i in items[:n]) + (", ..." if len(items) > n else "")


def spread(items: list) -> str:
    """The first, middle and last item: what a long list of names looks like."""
    if len(items) <= SHOWN:
        return ", ".join(str(i) for i in items)
    return " ... ".join(str(items[i]) for i in (0, len(items) // 2, len(items) - 1))
