"""A schedule's retention policy applied to its backup sets, previewed, and pins.

lib.retention decides (docs/retention.md has the rules); this module feeds it one
schedule's live sets (those its runs made) and carries the decision out. The caller
(the worker, scheduling.worker) applies retention only after a successful backup, so
a failing source never thins out the backups that still work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from backups import retention as set_rules
from backups import storage
from backups.models import BackupSet
from backups.retention import stored_keys
from lib.retention import Decision, Policy, select_kept
from scheduling.models import ACTIVE_STATUSES, BackupSchedule, BackupScheduleRun, run_of
from tenants.audit import record
from tenants.models import AuditAction

logger = logging.getLogger(__name__)

IN_USE = "in use by a queued or running verify or restore"
# The free-space estimate is the schedule's last set plus this share of it.
ESTIMATE_HEADROOM = 0.10


def policy_for(schedule: BackupSchedule) -> Policy:
    """The schedule's policy. ValueError (with a message for people) if it is not one."""
    return Policy(
        keep_last=schedule.keep_last,
        keep_daily=schedule.keep_daily,
        keep_weekly=schedule.keep_weekly,
        keep_monthly=schedule.keep_monthly,
        keep_yearly=schedule.keep_yearly,
    )


def live_sets(schedule: BackupSchedule) -> QuerySet[BackupSet]:
    """The live sets the schedule's runs made, newest first: the series the worker names by
    the schedule's code (index backups_set_live_by_series), so the cost follows the live
    sets, not the schedule's whole history."""
    # Both the schedule and its tenant: a set never leaves its tenant, whatever its series says.
    return BackupSet.objects.filter(
        series=schedule.code, tenant_id=schedule.tenant_id, deleted_at__isnull=True
    ).order_by("-created_at", "-id")


def estimated_size(schedule: BackupSchedule) -> int:
    """What the next backup of `schedule` will likely need: its last live set's size plus
    headroom, and at least BACKUPS_MIN_FREE_BYTES (which also covers a first run)."""
    last = live_sets(schedule).values_list("size", flat=True).first()
    estimate = int((last or 0) * (1 + ESTIMATE_HEADROOM))
    return max(estimate, int(settings.BACKUPS_MIN_FREE_BYTES))


def _decide(schedule: BackupSchedule, live: list[BackupSet]) -> Decision[int]:
    # `live` is newest first, so equal times are broken by id, as the list shows them.
    return select_kept(
        [(s.pk, s.created_at, set_rules.is_complete(s), s.pinned) for s in live],
        policy_for(schedule),
        schedule.timezone,
    )


def active_operations() -> QuerySet[BackupScheduleRun]:
    """Queued or running verifies and restores of the set in the outer query (for Exists)."""
    return BackupScheduleRun.objects.filter(subject_set=OuterRef("pk"), status__in=ACTIVE_STATUSES)


def _in_use(live: list[BackupSet]) -> set[int]:
    """Sets a queued or running verify or restore reads: deleting one would break it."""
    ids = [s.pk for s in live]
    return set(
        BackupScheduleRun.objects.filter(subject_set_id__in=ids, status__in=ACTIVE_STATUSES).values_list(
            "subject_set_id", flat=True
        )
    )


def _policy_details(schedule: BackupSchedule, policy: Policy) -> dict[str, Any]:
    return {
        "keep_last": policy.keep_last,
        "keep_daily": policy.keep_daily,
        "keep_weekly": policy.keep_weekly,
        "keep_monthly": policy.keep_monthly,
        "keep_yearly": policy.keep_yearly,
        "timezone": schedule.timezone,
    }


def apply_retention(schedule: BackupSchedule) -> list[BackupSet]:
    """Soft-delete the sets of this schedule its policy no longer keeps, then remove their files.

    Returns the sets pruned, newest first. Only this schedule's live sets (of its
    tenant) are considered. Pinned sets and sets a queued or running verify or restore
    reads are kept, re-checked at the moment of each deletion, so a pin or a restore
    requested meanwhile wins.
    """
    live = list(live_sets(schedule))
    if not live:
        return []
    policy = policy_for(schedule)
    decision = _decide(schedule, live)
    doomed = [s for s in live if s.pk in decision.deleted]
    pruned = []
    for backup_set in doomed:
        now = timezone.now()
        with transaction.atomic():
            # Mark first: a crash before the files go leaves orphan files, never a
            # listed set whose files are gone. The audit entry commits with the mark.
            # The filter re-checks what may have changed since the decision: a pin, a
            # verify or restore requested meanwhile.
            updated = (
                BackupSet.objects.filter(pk=backup_set.pk, deleted_at__isnull=True, pinned=False)
                .exclude(Exists(active_operations()))
                .update(deleted_at=now)
            )
            if not updated:
                continue
            backup_set.deleted_at = now
            record(
                schedule.tenant_id,
                AuditAction.SET_PRUNED,
                backup_set,
                schedule=str(schedule.code),
                created_at=backup_set.created_at.isoformat(),
                status=backup_set.status,
                reason=decision.deleted[backup_set.pk],
                policy=policy.describe(),
                **_policy_details(schedule, policy),
            )
        storage.delete_files(stored_keys(backup_set))
        pruned.append(backup_set)
        logger.info("retention removed backup set %s of schedule %s", backup_set.code, schedule.code)
    return pruned


@dataclass(frozen=True)
class PreviewEntry:
    backup_set: BackupSet
    reasons: tuple[str, ...]  # why it is kept, or the one reason it goes
    age: timedelta


@dataclass(frozen=True)
class RetentionPreview:
    """What `schedule`'s policy would do to its sets now, before anything is saved."""

    policy: Policy
    timezone: str
    as_of: datetime
    kept: list[PreviewEntry]  # newest first
    deleted: list[PreviewEntry]  # newest first


def preview_retention(schedule: BackupSchedule, now: datetime | None = None) -> RetentionPreview:
    """What `schedule`'s policy and zone would keep and delete of its live sets.

    `schedule` may be unsaved and carry what a form holds (a new schedule has no
    sets yet). Validate the form first: a policy that is not one raises ValueError.
    Sets created after `now` (default: now) are left out; ages are counted to it.
    """
    as_of = now or timezone.now()
    policy = policy_for(schedule)
    live = list(live_sets(schedule).filter(created_at__lte=as_of)) if schedule.pk else []
    decision = _decide(schedule, live)
    in_use = _in_use(live)
    kept, deleted = [], []
    for backup_set in live:
        age = as_of - backup_set.created_at
        if backup_set.pk in decision.kept:
            kept.append(PreviewEntry(backup_set, decision.kept[backup_set.pk], age))
        elif backup_set.pk in in_use:
            kept.append(PreviewEntry(backup_set, (IN_USE,), age))
        else:
            deleted.append(PreviewEntry(backup_set, (decision.deleted[backup_set.pk],), age))
    return RetentionPreview(policy=policy, timezone=schedule.timezone, as_of=as_of, kept=kept, deleted=deleted)


def set_pinned(backup_set: BackupSet, pinned: bool, actor: Any) -> bool:
    """Pin or unpin a live set (backups.retention.set_pinned), the audit entry naming its schedule."""
    made_by = run_of(backup_set)
    details = {"schedule": str(made_by.schedule.code)} if made_by is not None else {}
    return set_rules.set_pinned(backup_set, pinned, actor, **details)
