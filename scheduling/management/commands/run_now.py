from __future__ import annotations

from typing import Any
from uuid import UUID

from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.http import Http404

from scheduling.models import BackupSchedule, BackupScheduleRun
from scheduling.runs import RunRefused, retry, run_now
from tenants.access import RUN, get_for_member
from tenants.management.commands._base import acting_user


class Command(BaseCommand):
    help = "Run a schedule now (or --retry a failed run), acting as a member of its tenant."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("code", help="The schedule's code (or, with --retry, the failed run's code).")
        parser.add_argument("--as", dest="username", required=True, help="Act as this user (needs operator role).")
        parser.add_argument("--retry", action="store_true", help="Retry the failed run with this code.")

    def handle(self, *args: Any, **options: Any) -> None:
        user = acting_user(options["username"])
        try:
            code = UUID(options["code"])
        except ValueError:
            raise CommandError(f"{options['code']!r} is not a code (a UUID).", returncode=2) from None
        model = BackupScheduleRun if options["retry"] else BackupSchedule
        try:
            target = get_for_member(user, model, code, RUN).obj
            run = retry(target, user) if options["retry"] else run_now(target, user)  # type: ignore[arg-type]
        except Http404:
            raise CommandError(f"No {model._meta.verbose_name} {code} that {user} can see.", returncode=2) from None
        except PermissionDenied as exc:
            raise CommandError(str(exc), returncode=2) from None
        except RunRefused as exc:
            raise CommandError(str(exc), returncode=2) from None
        self.stdout.write(f"Queued run {run.code}.")
