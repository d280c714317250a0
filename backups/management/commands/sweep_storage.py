from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backups.sweep import STALE_AFTER, sweep_temporary_files


class Command(BaseCommand):
    help = (
        "Remove the hidden temporary files that backup writes killed outright left in the local "
        "backups folder (untouched for longer than any run may last). The cluster does this every hour."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="List what would be removed; remove nothing.")
        parser.add_argument(
            "--older-than-hours",
            type=float,
            default=STALE_AFTER.total_seconds() / 3600,
            help="Only files untouched for this long (default: the longest time limit a run may have, plus 1 h).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        hours = options["older_than_hours"]
        minimum = STALE_AFTER.total_seconds() / 3600
        if not math.isfinite(hours) or hours < minimum:
            raise CommandError(
                f"--older-than-hours must be a number of at least {minimum:g}: a younger file may belong to a "
                "backup that is still being written (the longest time limit a run may have, plus 1 h).",
                returncode=2,
            )
        try:
            stale_after = timedelta(hours=hours)
        except OverflowError:
            raise CommandError(
                f"--older-than-hours {hours:g} is more hours than a date can hold.", returncode=2
            ) from None
        report = sweep_temporary_files(stale_after, dry_run=options["dry_run"])
        if not report.local:
            self.stdout.write(
                "The backups storage is S3: it has no temporary files. An upload that died is cleared by "
                "the bucket's lifecycle rule (AbortIncompleteMultipartUpload)."
            )
            return
        verb = "Would remove" if options["dry_run"] else "Removed"
        for path in report.removed:
            self.stdout.write(f"{verb} {path}")
        self.stdout.write(
            f"{verb} {len(report.removed)} stale temporary file(s), {report.removed_bytes} bytes; "
            f"kept {report.kept_fresh} younger one(s)."
        )
        if report.errors:
            raise CommandError(f"{len(report.errors)} file(s) could not be removed: {'; '.join(report.errors)}")
