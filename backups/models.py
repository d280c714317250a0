from __future__ import annotations

import uuid

from django.core.exceptions import ValidationError
from django.db import models

from tenants.models import Tenant


class SourceKind(models.TextChoices):
    SQLITE = "sqlite", "SQLite database file"


class BackupSource(models.Model):
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="sources")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=SourceKind.choices, default=SourceKind.SQLITE)
    path = models.CharField(max_length=1000, help_text="Absolute path of the SQLite file, inside an allowed root.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="backups_source_unique_name")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from backups.engines.sqlite import check_path
        from backups.errors import BackupError

        try:
            check_path(self.path)
        except BackupError as exc:
            raise ValidationError({"path": exc.message}) from None


class BackupSet(models.Model):
    """One immutable backup file. Only `deleted_at` ever changes (retention)."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="backup_sets")
    schedule = models.ForeignKey("scheduling.BackupSchedule", models.SET_NULL, null=True, related_name="backup_sets")
    run = models.OneToOneField("scheduling.BackupScheduleRun", models.PROTECT, related_name="backup_set")
    source = models.ForeignKey(BackupSource, models.SET_NULL, null=True, related_name="backup_sets")
    storage_key = models.CharField(max_length=500, unique=True)
    size = models.BigIntegerField(help_text="Bytes stored (compressed).")
    source_size = models.BigIntegerField(help_text="Bytes read from the source (uncompressed).")
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Used by retention: a schedule's live sets, newest first.
            models.Index(
                fields=["schedule", "-created_at"],
                name="backups_set_live_by_schedule",
                condition=models.Q(deleted_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return self.storage_key
