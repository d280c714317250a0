"""Saving sources, with their audit entries (deleting one, which schedules may use, is
scheduling.sources')."""

from __future__ import annotations

from typing import Any

from backups.models import BackupSource
from tenants.audit import record
from tenants.models import AuditAction

AUDITED_FIELDS = ("name", "kind", "path", "host", "port", "database", "all_databases", "username", "tls_mode")


def save_source(source: BackupSource, before: dict[str, Any] | None, actor: Any) -> BackupSource:
    """Save a validated source; `before` is snapshot() of it as loaded, None when new."""
    source.save()
    if before is None:
        password = "set" if source.has_password else "none"
        record(source.tenant, AuditAction.SOURCE_CREATED, source, actor=actor, **snapshot(source), password=password)
    else:
        changes: dict[str, Any] = {
            f: [before[f], getattr(source, f)] for f in AUDITED_FIELDS if before[f] != getattr(source, f)
        }
        if source.password_changed:
            changes["password"] = source.password_changed  # "set" or "cleared", never the password
        if changes:
            record(source.tenant, AuditAction.SOURCE_UPDATED, source, actor=actor, changes=changes)
    return source


def snapshot(source: BackupSource) -> dict[str, Any]:
    return {f: getattr(source, f) for f in AUDITED_FIELDS}
