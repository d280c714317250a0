from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from scheduling.management.commands.restore import find_set, parse_code, report_run
from scheduling.operations import OperationRefused, request_verify
from tenants.access import RUN
from tenants.management.commands._base import acting_user


class Command(BaseCommand):
    help = "Verify a backup set (checksums, decompression, the engine's own check), acting as a member."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("code", help="The backup set's code.")
        parser.add_argument("--as", dest="username", required=True, help="Act as this user (needs operator role).")
        parser.add_argument(
            "--wait", action="store_true", help="Run the verification in this process and print its result."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = acting_user(options["username"])
        backup_set = find_set(user, parse_code(options["code"]), RUN)
        try:
            run = request_verify(backup_set, user, enqueue=not options["wait"])
        except OperationRefused as exc:
            raise CommandError(str(exc), returncode=2) from None
        if not options["wait"]:
            self.stdout.write(f"Queued verify run {run.code}.")
            return
        run = report_run(self, run)
        backup_set.refresh_from_db()
        self.stdout.write(f"Verification: {backup_set.get_verify_status_display()}. {backup_set.verify_message}")
        if run.status != "succeeded":
            raise CommandError(f"Verification of {backup_set.code} failed.", returncode=1)
