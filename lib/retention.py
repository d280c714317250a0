"""Which backup sets a keep-last-N policy removes. Pure Python, no Django."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from datetime import datetime
from typing import TypeVar

KeyT = TypeVar("KeyT", bound=Hashable)


def sets_to_prune(sets: Sequence[tuple[KeyT, datetime]], keep_last: int) -> list[KeyT]:
    """Keys of the sets beyond the newest `keep_last` (ties broken by key order given).

    Never returns the newest set, whatever `keep_last` says.
    """
    keep = max(keep_last, 1)
    ordered = sorted(enumerate(sets), key=lambda item: (item[1][1], -item[0]), reverse=True)
    return [key for _, (key, _) in ordered[keep:]]
