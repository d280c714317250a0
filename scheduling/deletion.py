"""Deleting backups by hand, scheduling's side: one unpinned set (manager) unless a
verify or restore uses it, or a schedule with all its sets (owner, after typing the
schedule's name). Access is the caller's business (tenants.access).

Both follow retention's order: the rows change first, in one transaction with the audit
entry, and the files go after commit, through the storage module (local or S3). A crash
in between leaves orphan files, never a listed set whose files are gone.

Deleting a schedule is refused while any run of it (backup, verify or restore) is queued
or running, which also covers the source leases, held only by running runs.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models import Exists

from backups import deletion, storage
from backups.models import BackupItem, BackupSet
from scheduling.models import ACTIVE_STATUSES, BackupSchedule, run_of
from scheduling.retention import active_operations
from scheduling.services import ScheduleInUse, delete_schedule

logger = logging.getLogger(__name__)


def delete_set(backup_set: BackupSet, actor: Any) -> None:
    """Delete one set by hand (backups.deletion), unless a queued or running verify or
    restore reads it; the audit entry names its schedule."""
    made_by = run_of(backup_set)
    details = {"schedule": str(made_by.schedule.code)} if made_by is not None else {}
    deletion.delete_set(backup_set, actor, in_use=Exists(active_operations()), **details)


def delete_schedule_with_sets(schedule: BackupSchedule, actor: Any) -> int:
    """Delete a schedule, its run history and every backup set it made (files too).

    Refused (ScheduleInUse) while a run of it is queued or running, or while one of its
    sets is pinned. Returns how many live sets went. The audit entry lists them."""
    sets = BackupSet.objects.filter(run__schedule=schedule)
    with transaction.atomic():
        # Locked first, as delete_schedule does: no run can start between the checks and the delete.
        BackupSchedule.objects.select_for_update().filter(pk=schedule.pk).first()
        if schedule.runs.filter(status__in=ACTIVE_STATUSES).exists():
            busy = "has a backup, verify or restore run queued or running"
            raise ScheduleInUse(f"“{schedule.name}” {busy}; wait for it to finish.", "busy")
        pinned = sets.filter(deleted_at__isnull=True, pinned=True).count()
        if pinned:
            sets_text, them = ("set", "it") if pinned == 1 else ("sets", "them")
            raise ScheduleInUse(
                f"“{schedule.name}” has {pinned} pinned backup {sets_text}, kept on purpose: unpin {them} first.",
                "has pinned sets",
            )
        live = list(sets.filter(deleted_at__isnull=True).order_by("-created_at", "-id"))
        items = BackupItem.objects.filter(backup_set__in=sets)
        keys = list(items.exclude(storage_key="").values_list("storage_key", flat=True))
        # Rows of sets retention deleted before go too: they would outlive their runs.
        items.delete()
        sets.delete()
        delete_schedule(
            schedule, actor, sets_deleted=[str(each.code) for each in live], bytes_deleted=sum(e.size for e in live)
        )
    left = storage.delete_files(keys)
    logger.info("schedule %s deleted with %d sets (%d files left behind)", schedule.code, len(live), len(left))
    return len(live)
