from __future__ import annotations

from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.http import Http404

from backups.models import BackupSet
from scheduling.models import BackupScheduleRun, RunStatus
from scheduling.operations import OperationRefused, pick_item, request_restore, target_named
from scheduling.worker import execute_run
from tenants.access import ADMINISTER, get_for_member
from tenants.management.commands._base import acting_user


def parse_code(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a code (a UUID).", returncode=2) from None


def find_set(user: User, code: UUID, min_role: str) -> BackupSet:
    try:
        return get_for_member(user, BackupSet, code, min_role).obj
    except Http404:
        raise CommandError(f"No backup set {code} that {user} can see.", returncode=2) from None
    except PermissionDenied as exc:
        raise CommandError(str(exc), returncode=2) from None


def report_run(command: BaseCommand, run: BackupScheduleRun) -> BackupScheduleRun:
    """Execute a queued run here (no cluster needed) and print how it ended."""
    execute_run(str(run.code))
    run.refresh_from_db()
    if run.status == RunStatus.QUEUED:
        # Deferred: the tenant already runs TENANT_MAX_RUNNING runs (scheduling.lifecycle.claim).
        raise CommandError(
            f"Run {run.code} waits: this tenant already runs {settings.TENANT_MAX_RUNNING} runs."
            " The cluster starts it when one of them finishes.",
            returncode=1,
        )
    command.stdout.write(run.log)
    ending = f"Run {run.code}: {run.get_status_display()}"
    if run.error_code:
        ending += f" ({run.error_code}: {run.error_message})"
    command.stdout.write(ending + ".")
    return run


class Command(BaseCommand):
    help = "Restore a backup set (owner only): into a new target by default; overwriting needs --confirm NAME."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("code", help="The backup set's code.")
        parser.add_argument("--as", dest="username", required=True, help="Act as this user (needs owner role).")
        parser.add_argument("--item", type=int, help="Restore only item N of the set (1 = the first).")
        parser.add_argument("--target", help="Database name or file/folder path to restore into.")
        parser.add_argument("--overwrite", action="store_true", help="Write over the target if it exists.")
        parser.add_argument("--confirm", default="", help="With --overwrite: the target's name, typed exactly.")
        parser.add_argument("--wait", action="store_true", help="Run the restore in this process and print its result.")

    def handle(self, *args: Any, **options: Any) -> None:
        user = acting_user(options["username"])
        backup_set = find_set(user, parse_code(options["code"]), ADMINISTER)
        if options["confirm"] and not options["overwrite"]:
            raise CommandError("--confirm goes with --overwrite.", returncode=2)
        if options["overwrite"] and not options["target"]:
            raise CommandError("--overwrite needs --target NAME (and --confirm NAME).", returncode=2)
        try:
            item = pick_item(backup_set, options["item"])
            target = None
            if options["target"]:
                if item is None:
                    raise OperationRefused("This backup set holds several items; choose one with --item N.")
                target = target_named(item, options["target"], overwrite=options["overwrite"])
            run = request_restore(
                backup_set, user, item=item, target=target, confirm=options["confirm"], enqueue=not options["wait"]
            )
        except OperationRefused as exc:
            raise CommandError(str(exc), returncode=2) from None
        except PermissionDenied as exc:
            raise CommandError(str(exc), returncode=2) from None
        if not options["wait"]:
            self.stdout.write(f"Queued restore run {run.code}.")
            return
        run = report_run(self, run)
        if run.status != RunStatus.SUCCEEDED:
            raise CommandError("The restore failed.", returncode=1)
