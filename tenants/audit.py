"""Writing the audit trail. Never put secrets in `details`."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone

from tenants.fastpath.sql_writes import insert_rows
from tenants.models import AUTOMATIC_ACTION_VALUES, AuditAction, AuditLog, Tenant

# Entries the system writes as it works (the dispatcher, the workers, retention, e-mail):
# the audit page shows people's actions first and these behind "Show automatic entries".
# The list itself sits beside the model, whose index for that page names it.
AUTOMATIC_ACTIONS = frozenset(AuditAction(value) for value in AUTOMATIC_ACTION_VALUES)

_LABEL_LENGTH = AuditLog._meta.get_field("target_label").max_length or 200
# What record_many writes of each entry (the id is the database's).
_COLUMNS = (
    "code",
    "tenant_id",
    "actor_id",
    "action",
    "target_type",
    "target_code",
    "target_label",
    "details",
    "created_at",
)


@dataclass(frozen=True)
class AuditEntry:
    """One entry to write with `record_many`.

    `target_type` and `target_code` name what the entry is about; an entry about several
    things (the dispatcher's "40 runs") gives its own type and no code. `created_at`
    None means the moment of writing; `actor` None (or an anonymous user) means the system.
    """

    tenant_id: int
    action: AuditAction
    target_type: str
    target_label: str = ""
    target_code: uuid.UUID | str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    actor: Any = None

    @classmethod
    def about(
        cls, tenant: Tenant | int, action: AuditAction, target: Any, actor: Any = None, **details: Any
    ) -> AuditEntry:
        """The entry `record` writes: type, code and label read from a model instance."""
        return cls(
            tenant_id=tenant if isinstance(tenant, int) else tenant.pk,
            action=action,
            target_type=type(target)._meta.model_name,
            target_code=getattr(target, "code", None),
            target_label=str(target),
            details=details,
            actor=actor,
        )


def record(
    tenant: Tenant | int,
    action: AuditAction,
    target: Any,
    actor: Any = None,
    **details: Any,
) -> AuditLog:
    row = _row(AuditEntry.about(tenant, action, target, actor, **details), timezone.now())
    row.save(force_insert=True)
    return row


def record_many(entries: Iterable[AuditEntry]) -> int:
    """Write many entries in one INSERT whatever their number, with the rules `record`
    follows: labels cut to fit, only a signed-in actor kept, one instant for the entries
    that give none. Returns how many were written.

    Through the fast path's set-based writer, not bulk_create: on SQLite Django splits
    a bulk_create every 111 rows (999 parameters), and the dispatcher's pass, which
    writes one entry per tenant and action, must cost the same statements at any size."""
    now = timezone.now()
    rows = [_fields(_row(entry, now)) for entry in entries]
    insert_rows(AuditLog, rows)
    return len(rows)


def _fields(row: AuditLog) -> dict[str, Any]:
    return {name: getattr(row, name) for name in _COLUMNS}


def _row(entry: AuditEntry, now: datetime) -> AuditLog:
    actor = entry.actor
    return AuditLog(
        tenant_id=entry.tenant_id,
        actor=actor if actor is not None and actor.is_authenticated else None,
        action=entry.action,
        target_type=entry.target_type,
        target_code=entry.target_code,
        target_label=entry.target_label[:_LABEL_LENGTH],
        details=entry.details,
        created_at=entry.created_at or now,
    )
