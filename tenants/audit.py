"""Writing the audit trail. Never put secrets in `details`."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from tenants.models import AUTOMATIC_ACTION_VALUES, AuditAction, AuditLog, Tenant

# Entries the system writes as it works (the dispatcher, the workers, retention, e-mail):
# the audit page shows people's actions first and these behind "Show automatic entries".
# The list itself sits beside the model, whose index for that page names it.
AUTOMATIC_ACTIONS = frozenset(AuditAction(value) for value in AUTOMATIC_ACTION_VALUES)


def record(
    tenant: Tenant | int,
    action: AuditAction,
    target: Any,
    actor: Any = None,
    **details: Any,
) -> AuditLog:
    tenant_id = tenant if isinstance(tenant, int) else tenant.pk
    return AuditLog.objects.create(
        tenant_id=tenant_id,
        actor=actor if actor is not None and actor.is_authenticated else None,
        action=action,
        target_type=type(target)._meta.model_name,
        target_code=getattr(target, "code", None),
        target_label=str(target)[:200],
        details=details,
        created_at=timezone.now(),
    )
