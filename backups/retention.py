"""Applying a schedule's retention policy after a successful run."""

from __future__ import annotations

import logging

from django.utils import timezone

from backups import storage
from backups.models import BackupSet
from lib.retention import sets_to_prune
from scheduling.models import BackupSchedule
from tenants.audit import record
from tenants.models import AuditAction

logger = logging.getLogger(__name__)


def apply_retention(schedule: BackupSchedule) -> list[BackupSet]:
    """Soft-delete this schedule's sets beyond keep-last-N and remove their files.

    Only this schedule's live sets are considered (so never another schedule's or
    tenant's), and the newest set is always kept.
    """
    live = list(BackupSet.objects.filter(schedule=schedule, deleted_at__isnull=True).order_by("-created_at", "-id"))
    doomed_ids = set(sets_to_prune([(s.pk, s.created_at) for s in live], schedule.keep_last))
    pruned = [s for s in live if s.pk in doomed_ids]
    now = timezone.now()
    for backup_set in pruned:
        # Mark first: a crash between the two steps leaves an orphan file, never a
        # listed set whose file is gone.
        updated = BackupSet.objects.filter(pk=backup_set.pk, deleted_at__isnull=True).update(deleted_at=now)
        if not updated:
            continue
        for key in backup_set.items.exclude(storage_key="").values_list("storage_key", flat=True):
            storage.delete(key)
        backup_set.deleted_at = now
        record(
            schedule.tenant_id,
            AuditAction.SET_PRUNED,
            backup_set,
            schedule=str(schedule.code),
            keep_last=schedule.keep_last,
            created_at=backup_set.created_at.isoformat(),
        )
        logger.info("retention removed backup set %s of schedule %s", backup_set.code, schedule.code)
    return pruned
