from __future__ import annotations

import uuid
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, models

from tenants.rules import resolved_roots, validate_roots, validate_rules
from tenants.validators import validate_plain_text


class Role(models.TextChoices):
    """Ordered from least to most powerful; see tenants.access.ROLE_RANK."""

    READONLY = "readonly", "Read-only"
    OPERATOR = "operator", "Operator"
    MANAGER = "manager", "Manager"
    OWNER = "owner", "Owner"


class Tenant(models.Model):
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200, validators=[validate_plain_text])
    # Folders this tenant's file sources (SQLite, folders) may read and restores may
    # write, each inside the server's SOURCE_ROOTS and no other tenant's. Set by staff.
    file_roots = models.JSONField(default=list, blank=True)
    # Database servers this tenant's server sources may name: IP addresses, networks,
    # host names or "*" (tenants/rules.py, backups/hosts.py). Empty = settings.SOURCE_ALLOWED_HOSTS. Set by staff.
    server_hosts = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Each file root absolute, inside the server's SOURCE_ROOTS, and neither equal to,
        inside, nor containing another tenant's root: one tenant never reaches another's files."""
        if not isinstance(self.file_roots, list):
            raise ValidationError({"file_roots": "A list of absolute folder paths."})
        if not isinstance(self.server_hosts, list):
            raise ValidationError({"server_hosts": "A list of host names, addresses or networks."})
        hosts, host_errors = validate_rules(self.server_hosts)
        if host_errors:
            raise ValidationError({"server_hosts": host_errors})
        self.server_hosts = hosts
        _lock_file_roots()
        roots, errors = validate_roots(self.file_roots, other_tenants_roots(self))
        if errors:
            raise ValidationError({"file_roots": errors})
        self.file_roots = roots


def other_tenants_roots(tenant: Tenant | None) -> list[Path]:
    """Every other tenant's roots, resolved now (a symlink may have changed since they were saved)."""
    others = Tenant.objects.all() if tenant is None or tenant.pk is None else Tenant.objects.exclude(pk=tenant.pk)
    return resolved_roots(others.values_list("file_roots", flat=True))


# Any fixed number: the key of the advisory lock that serializes root checks.
_ROOTS_LOCK_KEY = 0x7E0A_2007


def _lock_file_roots() -> None:
    """Serialize root validation with the save that follows (the admin wraps both in one
    transaction): two tenants saved at once could otherwise each pass the overlap check.
    SQLite already serializes writing transactions (BEGIN IMMEDIATE)."""
    if connection.vendor == "postgresql" and connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ROOTS_LOCK_KEY])


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="memberships")
    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.READONLY)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "tenant"], name="tenants_membership_one_per_user")]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} as {self.role}"


class AuditAction(models.TextChoices):
    SCHEDULE_CREATED = "schedule.created"
    SCHEDULE_UPDATED = "schedule.updated"
    SCHEDULE_DELETED = "schedule.deleted"
    SCHEDULE_ENABLED = "schedule.enabled"
    SCHEDULE_DISABLED = "schedule.disabled"
    SOURCE_CREATED = "source.created"
    SOURCE_UPDATED = "source.updated"
    SOURCE_DELETED = "source.deleted"
    SOURCE_TESTED = "source.tested"
    TENANT_ROOTS_CHANGED = "tenant.roots_changed"
    TENANT_HOSTS_CHANGED = "tenant.hosts_changed"
    RUN_CREATED = "run.created"
    RUN_SKIPPED = "run.skipped"
    RUN_MISSED = "run.missed"
    RUN_NOW = "run.run_now"
    RUN_RETRY = "run.retry"
    RUN_STARTED = "run.started"
    RUN_FINISHED = "run.finished"
    RUN_RETRY_SCHEDULED = "run.retry_scheduled"
    SET_PRUNED = "backup_set.pruned"
    SET_PINNED = "backup_set.pinned"
    SET_UNPINNED = "backup_set.unpinned"
    SET_DELETED = "backup_set.deleted"
    VERIFY_REQUESTED = "backup_set.verify_requested"
    SET_VERIFIED = "backup_set.verified"
    RESTORE_REQUESTED = "backup_set.restore_requested"
    RESTORE_FINISHED = "backup_set.restored"
    RETENTION_CHANGED = "schedule.retention_changed"
    NOTIFICATION_SENT = "notification.sent"
    LOGIN_LOCKED = "account.locked_out"


# What the system writes as it works, not people (tenants.audit.AUTOMATIC_ACTIONS).
AUTOMATIC_ACTION_VALUES = [
    AuditAction.RUN_CREATED.value,
    AuditAction.RUN_SKIPPED.value,
    AuditAction.RUN_MISSED.value,
    AuditAction.RUN_STARTED.value,
    AuditAction.RUN_FINISHED.value,
    AuditAction.RUN_RETRY_SCHEDULED.value,
    AuditAction.SET_PRUNED.value,
    AuditAction.SET_VERIFIED.value,
    AuditAction.RESTORE_FINISHED.value,
    AuditAction.NOTIFICATION_SENT.value,
]


class AuditLog(models.Model):
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # db_index=False: tenants_audit_tenant_time leads with tenant.
    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="audit_entries", db_index=False)
    # NULL actor = the system (dispatcher, worker, retention). No index: only a
    # user's deletion looks entries up by it, and the dispatcher writes thousands.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+", db_index=False
    )
    action = models.CharField(max_length=32, choices=AuditAction.choices)
    target_type = models.CharField(max_length=32)
    target_code = models.UUIDField(null=True, blank=True)
    target_label = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(db_index=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Used by the tenant's audit page, newest first.
            models.Index(fields=["tenant", "-created_at"], name="tenants_audit_tenant_time"),
            # Used by the audit page's default view, people's actions newest first: without
            # it the walk passes the dispatcher's and workers' thousands to find 50.
            models.Index(
                fields=["tenant", "-created_at"],
                name="tenants_audit_people",
                condition=~models.Q(action__in=AUTOMATIC_ACTION_VALUES),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.target_label}"

    @property
    def actor_label(self) -> str:
        return self.actor.get_username() if self.actor else "system"
