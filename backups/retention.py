"""What retention needs to know of a set, and pins. Which sets a schedule keeps is
decided per schedule in scheduling.retention (with lib.retention's rules)."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from backups.models import BackupSet, SetStatus, VerifyStatus
from tenants.audit import record
from tenants.models import AuditAction


class PinRefused(Exception):
    """The pin was not changed; the message says why, in words for the user."""


def is_complete(backup_set: BackupSet) -> bool:
    # A set whose verification failed may not restore: it must not take the place
    # of an older good set in any rule, so it counts as incomplete.
    return backup_set.status == SetStatus.COMPLETE and backup_set.verify_status != VerifyStatus.FAILED


def stored_keys(backup_set: BackupSet) -> list[str]:
    return list(backup_set.items.exclude(storage_key="").values_list("storage_key", flat=True))


def set_pinned(backup_set: BackupSet, pinned: bool, actor: Any, **details: Any) -> bool:
    """Pin (keep whatever the policy says) or unpin a live set. False if it already was.

    Unpinning deletes nothing at once: the retention after the next successful backup
    decides. Access is the caller's business (tenants.access). `details` go into the
    audit entry (scheduling adds the set's schedule).
    """
    with transaction.atomic():
        # Races retention's mark: whichever update comes first wins, and the other sees it.
        updated = (
            BackupSet.objects.filter(pk=backup_set.pk, deleted_at__isnull=True)
            .exclude(pinned=pinned)
            .update(pinned=pinned)
        )
        if not updated:
            current = BackupSet.objects.filter(pk=backup_set.pk).values("deleted_at", "pinned").first()
            if current is None or current["deleted_at"] is not None:
                raise PinRefused("This backup set has already been deleted by retention.")
            backup_set.pinned = current["pinned"]
            return False
        action = AuditAction.SET_PINNED if pinned else AuditAction.SET_UNPINNED
        record(
            backup_set.tenant_id,
            action,
            backup_set,
            actor=actor,
            created_at=backup_set.created_at.isoformat(),
            **details,
        )
    backup_set.pinned = pinned
    return True
