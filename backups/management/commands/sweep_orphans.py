from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backups.orphans import sweep_orphan_files


class Command(BaseCommand):
    help = (
        "Remove the stored backup files that no backup set names, once older than "
        "BACKUPS_ORPHAN_AFTER_HOURS (longer than any run may last). The cluster does this every hour."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="List what would be removed; remove nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run = options["dry_run"]
        report = sweep_orphan_files(dry_run=dry_run)
        if report.no_items:
            self.stdout.write(
                "The database names no stored backup file, so none was judged: a backups storage "
                "belongs to one installation, and this database may not be its own."
            )
            return
        verb = "Would remove" if dry_run else "Removed"
        for key in report.removed:
            self.stdout.write(f"{verb} {key}")
        for link in report.links:
            self.stdout.write(f"Not followed (a symlink): {link}")
        self.stdout.write(
            f"{verb} {len(report.removed)} file(s) no backup set names, {report.removed_bytes} bytes, of "
            f"{report.checked} old enough to judge; kept {report.kept_young} younger one(s)."
        )
        if report.errors:
            raise CommandError(f"{len(report.errors)} problem(s): {'; '.join(report.errors)}")
