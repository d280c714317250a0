from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from scheduling.dispatch import run_pass

# Slot math walks days forward from --at; near datetime's year-9999 end it would overflow.
# Replays and tests of the far future both fit in this range.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def parse_instant(text: str) -> datetime:
    try:
        instant = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CommandError(
            f"--at takes an ISO-8601 instant such as 2026-03-29T01:00:00Z, not {text!r}", returncode=2
        ) from None
    if instant.tzinfo is None:
        raise CommandError("--at needs a time zone offset (Z or +01:00): a naive time is ambiguous", returncode=2)
    if not EARLIEST <= instant < LATEST:
        raise CommandError(
            f"--at must lie from {EARLIEST:%Y-%m-%d} up to {LATEST:%Y-%m-%d} (UTC), not {text!r}", returncode=2
        )
    return instant


class Command(BaseCommand):
    help = "Run one dispatcher pass and print its counts as one JSON line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--at", help="Pretend it is this instant (ISO-8601 with offset); default now.")

    def handle(self, *args: Any, **options: Any) -> None:
        # An empty --at is a mistake (an unset shell variable), not "now".
        at = parse_instant(options["at"]) if options["at"] is not None else None
        report = run_pass(at)
        self.stdout.write(report.as_json())
        if not report.enabled:
            self.stderr.write(report.message)
