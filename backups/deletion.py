"""Deleting one backup set by hand (manager). Access is the caller's business
(tenants.access); what else may be using the set is the caller's too (scheduling
passes its queued or running verifies and restores).

It follows retention's order: the row changes first, in one transaction with the
audit entry, and the files go after commit, through the storage module (local or
S3). A crash in between leaves orphan files, never a listed set whose files are gone.
A pinned set is refused (unpin it first).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models import Exists
from django.utils import timezone

from backups import storage
from backups.models import BackupSet
from backups.retention import stored_keys
from tenants.audit import record
from tenants.models import AuditAction

logger = logging.getLogger(__name__)

IN_USE_MESSAGE = "A verify or restore of this backup set is queued or running; delete it once that has finished."


class SetDeleteRefused(Exception):
    """The set was not deleted; the message says why, in words for the user."""


def delete_set(backup_set: BackupSet, actor: Any, in_use: Exists | None = None, **details: Any) -> None:
    """Mark one live, unpinned set deleted (audited), then remove its files.

    `in_use`: an Exists over the set (OuterRef("pk")) that, when true, keeps it."""
    with transaction.atomic():
        # One compare-and-swap re-checks what may have changed since the page was drawn:
        # a pin, a verify or restore requested meanwhile, retention deleting it first.
        live = BackupSet.objects.filter(pk=backup_set.pk, deleted_at__isnull=True, pinned=False)
        if in_use is not None:
            live = live.exclude(in_use)
        if not live.update(deleted_at=timezone.now()):
            raise SetDeleteRefused(_why_kept(backup_set))
        entry = {"created_at": backup_set.created_at.isoformat(), "status": backup_set.status, **details}
        record(backup_set.tenant_id, AuditAction.SET_DELETED, backup_set, actor=actor, **entry)
    storage.delete_files(stored_keys(backup_set))
    logger.info("backup set %s deleted by hand", backup_set.code)


def _why_kept(backup_set: BackupSet) -> str:
    current = BackupSet.objects.filter(pk=backup_set.pk).values("deleted_at", "pinned").first()
    if current is None or current["deleted_at"] is not None:
        return "This backup set has already been deleted."
    if current["pinned"]:
        return "This backup set is pinned: unpin it first to delete it."
    return IN_USE_MESSAGE
