"""How schedules and runs read on a page: the cadence in words, instants relative to now, triggers.

No queries here: the list and the settings page call these once per schedule, so
anything that touched the database would make their query count grow with the list.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.utils.html import format_html
from django.utils.safestring import SafeString

from lib.cron_words import cron_words
from lib.wallclock import WALL_FORMAT, wall_text
from scheduling.models import BackupSchedule, BackupScheduleRun, Operation, ScheduleKind
from scheduling.runs import RetryPending, RunRefused

# lib.wallclock prints instants for every app's pages; this module's callers import them from here too.
__all__ = ["WALL_FORMAT", "describe_cadence", "refusal_text", "relative", "trigger_text", "utc_iso", "wall_text"]

DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def join_words(words: list[str]) -> str:
    """["a", "b", "c"] -> "a, b and c"."""
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} and {words[-1]}"


def describe_cadence(schedule: BackupSchedule) -> SafeString:
    """The cadence in words, e.g. "At 02:30 on Monday and Thursday, Europe/Berlin"."""
    tz, at = schedule.timezone, schedule.time_of_day.strftime("%H:%M")
    if schedule.kind == ScheduleKind.DAILY:
        return format_html("At {} every day, {}", at, tz)
    if schedule.kind == ScheduleKind.WEEKLY:
        days = [DAY_NAMES[day] for day in sorted(set(schedule.weekdays or [])) if day in range(7)]
        if len(days) == 7:
            return format_html("At {} every day, {}", at, tz)
        return format_html("At {} on {}, {}", at, join_words(days) or "no day", tz)
    if schedule.kind == ScheduleKind.CRON:
        words = cron_in_words(schedule.cron)
        if words:
            return format_html("{}, {} <code>{}</code>", words, tz, schedule.cron)
        return format_html("Cron <code>{}</code>, {}", schedule.cron, tz)
    if schedule.kind == ScheduleKind.EVERY_N_HOURS:
        if schedule.every_hours == 1:
            return format_html("Every hour from {}, {}", at, tz)
        return format_html("Every {} hours from {}, {}", schedule.every_hours, at, tz)
    return format_html("{}", "Never by itself (Run now only)")


def cron_in_words(expression: str) -> str:
    """What lib/cron.py runs, in words; "" for an expression it refuses (shown bare)."""
    words = cron_words(expression)
    return words.text if words else ""


def _amount(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def relative(instant: datetime | None, now: datetime) -> str:
    """ "in 3 hours", "5 minutes ago", "now": the largest whole unit, rounded down."""
    if instant is None:
        return ""
    delta = instant - now
    future = delta > timedelta(0)  # this very instant has passed, not come
    seconds = abs(delta.total_seconds())
    if seconds < 60:
        return "in under a minute" if future else "just now"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            text = _amount(int(seconds // size), unit)
            break
    return f"in {text}" if future else f"{text} ago"


def utc_iso(instant: datetime | None) -> str:
    """For <time datetime="...">."""
    return instant.astimezone(UTC).isoformat() if instant is not None else ""


def refusal_text(exc: RunRefused, zone_name: str, now: datetime) -> str:
    """Why a run was not created, with the time a pending retry starts in the viewer's zone."""
    if isinstance(exc, RetryPending):
        return f"{exc.pending} {wall_text(exc.starts_at, zone_name)} ({relative(exc.starts_at, now)})."
    return str(exc)


def trigger_text(run: BackupScheduleRun) -> str:
    """What started a run, in words: a verify or restore names its operation rather than
    "Run now" (it was requested from a backup set, not with the schedule's button)."""
    if run.operation == Operation.BACKUP:
        return run.get_trigger_display()
    return f"{run.get_operation_display()} requested"
