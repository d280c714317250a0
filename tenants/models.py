from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    """Ordered from least to most powerful; see tenants.access.ROLE_RANK."""

    READONLY = "readonly", "Read-only"
    OPERATOR = "operator", "Operator"
    MANAGER = "manager", "Manager"
    OWNER = "owner", "Owner"


class Tenant(models.Model):
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


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
    RUN_CREATED = "run.created"
    RUN_SKIPPED = "run.skipped"
    RUN_MISSED = "run.missed"
    RUN_NOW = "run.run_now"
    RUN_RETRY = "run.retry"
    RUN_STARTED = "run.started"
    RUN_FINISHED = "run.finished"
    SET_PRUNED = "backup_set.pruned"


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
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.target_label}"

    @property
    def actor_label(self) -> str:
        return self.actor.get_username() if self.actor else "system"
