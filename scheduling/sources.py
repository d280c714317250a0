"""Deleting a source, which schedules may still use: so it sits where schedules are known."""

from __future__ import annotations

from typing import Any

from django.db.models import ProtectedError

from backups.models import BackupSource
from backups.services import snapshot
from scheduling.models import BackupSchedule
from tenants.audit import record
from tenants.models import AuditAction


class SourceInUse(Exception):
    """The source still has schedules; the message names them."""


def schedule_names(source: BackupSource) -> list[str]:
    """The names of the schedules backing up the source, in order."""
    return list(BackupSchedule.objects.filter(sources=source).order_by("name").values_list("name", flat=True))


def delete_source(source: BackupSource, actor: Any) -> None:
    names = schedule_names(source)
    if names:
        raise SourceInUse(f"“{source.name}” is used by {', '.join(names)}; delete or change those schedules first.")
    try:
        source.delete()
    except ProtectedError:  # a schedule was added meanwhile
        raise SourceInUse(f"“{source.name}” is still used by a schedule.") from None
    record(source.tenant, AuditAction.SOURCE_DELETED, source, actor=actor, **snapshot(source))
