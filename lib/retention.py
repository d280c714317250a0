"""Which backup sets a retention policy keeps, and why. Pure Python, no Django.

The rules are restic's ``forget`` (docs/retention.md has a worked example):

* ``keep_last`` N: the N newest complete sets.
* ``keep_daily`` D: of the D most recent local calendar days that have a complete
  set, the newest complete set of each day. Likewise ``keep_weekly`` (ISO weeks,
  Monday to Sunday), ``keep_monthly`` and ``keep_yearly``. 0 turns a rule off.
  Days are dates in the schedule's IANA zone, so a set taken at 00:30 local time
  belongs to that local day whatever its UTC date, and a 23- or 25-hour DST day is
  still one day.
* The rules are independent (restic, not borg): a set kept by one rule still
  counts for the others, and a set is kept if any rule keeps it.
* Pinned sets are always kept; a pinned complete set also counts for the rules.
* Incomplete sets (``complete`` false: partial sets, where some items failed, and
  sets whose verification failed) count for no rule. One is kept while it is not
  older than the oldest complete set the rules keep, deleted once it is: within
  the retention window it may hold the only copy of a source whose other dump
  failed; outside it, it is older than everything the policy wants. Pins do not
  stretch that window (else one pinned set from years ago would keep every
  incomplete set since). With no complete set at all, every incomplete set is kept.
* The newest complete set is never deleted: ``keep_last`` is at least 1.

Sets with the same ``created_at`` are ordered by their position in the input: the
one given first counts as the newer (callers pass newest first).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import asdict, dataclass
from datetime import date, datetime, tzinfo
from typing import Generic, NamedTuple, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

KeyT = TypeVar("KeyT", bound=Hashable)

PINNED = "pinned"
PARTIAL_IN_WINDOW = "incomplete, not older than the oldest kept complete set"
PARTIAL_ALONE = "incomplete, no complete set to replace it"
NOT_KEPT = "kept by no rule"
PARTIAL_OUTSIDE = "incomplete, older than the oldest kept complete set"


class SetInfo(NamedTuple, Generic[KeyT]):
    """One backup set as retention sees it."""

    key: KeyT
    created_at: datetime  # aware
    complete: bool
    pinned: bool


@dataclass(frozen=True)
class Policy:
    keep_last: int = 1
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a whole number, 0 or more (got {value!r}).")
        if self.keep_last < 1:
            # The newest complete set must survive every policy.
            raise ValueError("keep_last must be at least 1: the newest backup is always kept.")

    def describe(self) -> str:
        """For people and the audit trail: "last 7, daily 14, monthly 6"."""
        parts = [f"last {self.keep_last}"]
        parts += [f"{name} {getattr(self, attr)}" for name, attr, _ in _PERIODS if getattr(self, attr)]
        return ", ".join(parts)


@dataclass(frozen=True)
class Decision(Generic[KeyT]):
    """Every input key is in exactly one of the two, each ordered newest first."""

    kept: dict[KeyT, tuple[str, ...]]  # why each is kept, e.g. ("last 3", "daily 2026-11-26")
    deleted: dict[KeyT, str]  # why each goes: NOT_KEPT or PARTIAL_OUTSIDE


def _day(d: date) -> tuple[tuple[int, ...], str]:
    return (d.toordinal(),), d.isoformat()


def _week(d: date) -> tuple[tuple[int, ...], str]:
    # The ISO year, not the calendar year: 2027-01-01 is in week 2026-W53.
    iso = d.isocalendar()
    return (iso.year, iso.week), f"{iso.year:04d}-W{iso.week:02d}"


def _month(d: date) -> tuple[tuple[int, ...], str]:
    return (d.year, d.month), f"{d.year:04d}-{d.month:02d}"


def _year(d: date) -> tuple[tuple[int, ...], str]:
    return (d.year,), f"{d.year:04d}"


# (rule name, policy attribute, local date -> (sortable bucket, label))
_PERIODS: tuple[tuple[str, str, Callable[[date], tuple[tuple[int, ...], str]]], ...] = (
    ("daily", "keep_daily", _day),
    ("weekly", "keep_weekly", _week),
    ("monthly", "keep_monthly", _month),
    ("yearly", "keep_yearly", _year),
)


def zone_for(zone: str | tzinfo) -> tzinfo:
    if not isinstance(zone, str):
        return zone
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"Unknown time zone “{zone}”. Use an IANA name such as Europe/Berlin.") from None


def select_kept(
    sets: Iterable[tuple[KeyT, datetime, bool, bool]], policy: Policy, zone: str | tzinfo
) -> Decision[KeyT]:
    """Apply `policy` to `sets` (key, created_at, complete, pinned), days taken in `zone`."""
    tz = zone_for(zone)
    items = [SetInfo(*s) for s in sets]
    if len({s.key for s in items}) != len(items):
        raise ValueError("Each backup set must appear once.")
    if any(s.created_at.utcoffset() is None for s in items):
        raise ValueError("created_at must be an aware datetime.")
    # Newest first; on equal times the one given first is the newer.
    order = sorted(range(len(items)), key=lambda i: (items[i].created_at, -i), reverse=True)
    complete = [i for i in order if items[i].complete]
    reasons: dict[int, list[str]] = {}

    for i in complete[: policy.keep_last]:
        reasons.setdefault(i, []).append(f"last {policy.keep_last}")

    local_dates = {i: items[i].created_at.astimezone(tz).date() for i in complete}
    for name, attr, bucket_of in _PERIODS:
        wanted = getattr(policy, attr)
        if not wanted:
            continue
        newest_in: dict[tuple[int, ...], tuple[int, str]] = {}
        for i in complete:  # newest first, so the first seen of a bucket is its newest
            bucket, label = bucket_of(local_dates[i])
            newest_in.setdefault(bucket, (i, label))
        # The most recent periods by the calendar, not by when their sets were taken:
        # the two agree except across a fall-back transition at local midnight.
        for bucket in sorted(newest_in, reverse=True)[:wanted]:
            i, label = newest_in[bucket]
            reasons.setdefault(i, []).append(f"{name} {label}")

    window_start = min((items[i].created_at for i in reasons), default=None)
    for i in order:
        if not items[i].complete:
            if window_start is None:
                reasons.setdefault(i, []).append(PARTIAL_ALONE)
            elif items[i].created_at >= window_start:
                reasons.setdefault(i, []).append(PARTIAL_IN_WINDOW)
        if items[i].pinned:
            reasons.setdefault(i, []).append(PINNED)

    kept = {items[i].key: tuple(reasons[i]) for i in order if i in reasons}
    deleted = {items[i].key: NOT_KEPT if items[i].complete else PARTIAL_OUTSIDE for i in order if i not in reasons}
    return Decision(kept=kept, deleted=deleted)
