"""Deleting backups by hand: one unpinned set (manager), or a schedule with all its sets
(owner, after typing the schedule's name). Access is the caller's business (tenants.access).

Both follow retention's order: the rows change first, in one transaction with the audit
entry, and the files go after commit, through the storage module (local or S3). A crash
in between leaves orphan files, never a listed set whose files are gone.

A set is never deleted while something uses it: a pinned set is refused (unpin it
first), and so is a set a queued or running verify or restore reads. Deleting a schedule
is refused while any run of it (backup, verify or restore) is queued or running, which
also covers the source leases, held only by running runs.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from backups import storage
from backups.models import BackupItem, BackupSet
from backups.retention import stored_keys
from scheduling.models import ACTIVE_STATUSES, BackupSchedule, BackupScheduleRun
from scheduling.services import ScheduleInUse, delete_schedule
from tenants.audit import record
from tenants.models import AuditAction

logger = logging.getLogger(__name__)


class SetDeleteRefused(Exception):
    """The set was not deleted; the message says why, in words for the user."""


def _active_operations() -> Any:
    return BackupScheduleRun.objects.filter(subject_set=OuterRef("pk"), status__in=ACTIVE_STATUSES)


def delete_set(backup_set: BackupSet, actor: Any) -> None:
    """Mark one live, unpinned set deleted (audited), then remove its files."""
    with transaction.atomic():
        # One compare-and-swap re-checks what may have changed since the page was drawn:
        # a pin, a verify or restore requested meanwhile, retention deleting it first.
        updated = (
            BackupSet.objects.filter(pk=backup_set.pk, deleted_at__isnull=True, pinned=False)
            .exclude(Exists(_active_operations()))
            .update(deleted_at=timezone.now())
        )
        if not updated:
            raise SetDeleteRefused(_why_kept(backup_set))
        details: dict[str, Any] = {"created_at": backup_set.created_at.isoformat(), "status": backup_set.status}
        if backup_set.schedule is not None:
            details["schedule"] = str(backup_set.schedule.code)
        record(backup_set.tenant_id, AuditAction.SET_DELETED, backup_set, actor=actor, **details)
    storage.delete_files(stored_keys(backup_set))
    logger.info("backup set %s deleted by hand", backup_set.code)


def _why_kept(backup_set: BackupSet) -> str:
    current = BackupSet.objects.filter(pk=backup_set.pk).values("deleted_at", "pinned").first()
    if current is None or current["deleted_at"] is not None:
        return "This backup set has already been deleted."
    if current["pinned"]:
        return "This backup set is pinned: unpin it first to delete it."
    return "A verify or restore of this backup set is queued or running; delete it once that has finished."


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
        # Rows of sets retention deleted before go too: a set keeps its run (PROTECT).
        items.delete()
        sets.delete()
        delete_schedule(
            schedule, actor, sets_deleted=[str(each.code) for each in live], bytes_deleted=sum(e.size for e in live)
        )
    left = storage.delete_files(keys)
    logger.info("schedule %s deleted with %d sets (%d files left behind)", schedule.code, len(live), len(left))
    return len(live)
