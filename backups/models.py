from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from backups.engines.registry import DEFAULT_KIND, KIND_MAX_LENGTH, find_engine, kind_choices
from backups.errors import BackupError
from backups.paths import check_source_path
from backups.secrets import decrypt, encrypt
from tenants.models import Tenant
from tenants.validators import validate_path, validate_plain_text


class _Kinds:
    """The registered kinds by name, SourceKind.POSTGRES == "postgres", for code that makes
    a source of a given kind (demo data, benchmarks, tests). What a kind is, its label,
    whether it is a server, its default port, is its engine's (backups.engines.registry)."""

    def __getattr__(self, name: str) -> str:
        engine = find_engine(name.lower()) if name.isupper() else None
        if engine is None:
            raise AttributeError(f"No engine registers the kind {name.lower()!r}.")
        return engine.kind


SourceKind = _Kinds()


class TlsMode(models.TextChoices):
    """libpq's sslmode names; the MariaDB engine maps them to its own options."""

    DISABLE = "disable", "Off"
    PREFER = "prefer", "Use if the server offers it"
    REQUIRE = "require", "Required (not verified)"
    VERIFY_FULL = "verify-full", "Required and verified (CA and host name)"


class BackupSource(models.Model):
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="sources")
    name = models.CharField(max_length=200, validators=[validate_plain_text])
    kind = models.CharField(max_length=KIND_MAX_LENGTH, choices=kind_choices, default=DEFAULT_KIND)
    # File kinds (sqlite, directory): an absolute path inside one of the tenant's file roots.
    path = models.CharField(
        max_length=1000,
        blank=True,
        help_text="Absolute path of the file or folder, inside an allowed root.",
        validators=[validate_path],
    )
    # Server kinds (postgres, mysql).
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    database = models.CharField(
        max_length=255, blank=True, help_text="Blank with “all databases”: discovered at run time."
    )
    all_databases = models.BooleanField(
        default=False, help_text="Back up every database of the server (discovered at run time)."
    )
    username = models.CharField(max_length=255, blank=True)
    # Fernet token (backups.secrets); never the plain password. Empty = no password.
    password_encrypted = models.TextField(blank=True, editable=False)
    tls_mode = models.CharField(max_length=16, choices=TlsMode.choices, default=TlsMode.PREFER)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="backups_source_unique_name")]

    def __str__(self) -> str:
        return self.name

    # Set by set_password() on this instance, so saving can audit that the password
    # changed (never what it is).
    password_changed = ""

    def set_password(self, raw: str) -> None:
        """Store `raw` encrypted (backups.secrets); an empty string removes the password."""
        self.password_encrypted = encrypt(raw) if raw else ""
        self.password_changed = "set" if raw else "cleared"

    def get_password(self) -> str:
        """The plain password ("" when none). Raises backups.secrets.SecretError if no key decrypts it."""
        return decrypt(self.password_encrypted) if self.password_encrypted else ""

    @property
    def has_password(self) -> bool:
        return bool(self.password_encrypted)

    @property
    def is_server(self) -> bool:
        """Whether the source connects to a database server (else it reads a path); False
        for a kind this server has no engine for."""
        engine = find_engine(self.kind)
        return engine is not None and engine.is_server

    def clean_fields(self, exclude: Any = None) -> None:
        # The path rule here rather than in clean(): a form whose path field already has
        # an error excludes it, and would otherwise show a second, wrong one.
        errors: dict[str, Any] = {}
        try:
            super().clean_fields(exclude)
        except ValidationError as exc:
            errors = exc.update_error_dict(errors)
        if "path" not in (exclude or ()) and "path" not in errors:
            try:
                self._clean_path()
            except ValidationError as exc:
                errors = exc.update_error_dict(errors)
        if errors:
            raise ValidationError(errors)

    def _clean_path(self) -> None:
        if self.is_server or not self.tenant_id:
            return
        try:
            self.path = str(check_source_path(self.path, self.tenant))
        except BackupError as exc:
            raise ValidationError({"path": exc.message}) from None


class SetStatus(models.TextChoices):
    COMPLETE = "complete", "Complete"
    PARTIAL = "partial", "Partial"


class VerifyStatus(models.TextChoices):
    NEVER = "", "Not verified"
    OK = "ok", "Verified"
    FAILED = "failed", "Verification failed"


class BackupSet(models.Model):
    """What one backup produced: one item per source (or database). Immutable
    except for `deleted_at` (retention), `pinned` and the verification result.

    It knows no run nor schedule: the run that made it points at it
    (scheduling's BackupScheduleRun.backup_set, reverse accessor `run`). Sets that
    belong together carry the same `series`, a key their maker chooses (scheduling:
    the schedule's code) and this app only groups by."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="backup_sets")
    # Opaque here; set once, when the set is made (backups.pipeline.BackupJob.series).
    series = models.UUIDField(null=True, blank=True, editable=False)
    status = models.CharField(max_length=16, choices=SetStatus.choices, default=SetStatus.COMPLETE)
    size = models.BigIntegerField(default=0, help_text="Bytes stored (compressed), all items.")
    source_size = models.BigIntegerField(default=0, help_text="Bytes read from the sources (uncompressed), all items.")
    created_at = models.DateTimeField()
    deleted_at = models.DateTimeField(null=True, blank=True)
    # Pinned sets are never deleted by retention.
    pinned = models.BooleanField(default=False)
    verified_at = models.DateTimeField(null=True, blank=True)
    verify_status = models.CharField(
        max_length=16, choices=VerifyStatus.choices, blank=True, default=VerifyStatus.NEVER
    )
    verify_message = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Used by retention and the schedule page (scheduling.retention.live_sets): a
            # series' live sets, newest first, however many removed sets its history holds.
            models.Index(
                fields=["series", "-created_at"],
                name="backups_set_live_by_series",
                condition=models.Q(deleted_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"Backup set {self.created_at:%Y-%m-%d %H:%M} UTC"


class ItemStatus(models.TextChoices):
    OK = "ok", "Stored"
    FAILED = "failed", "Failed"


class BackupItem(models.Model):
    """One source (or one database of a server) inside a backup set: one stored file."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    backup_set = models.ForeignKey(BackupSet, models.CASCADE, related_name="items")
    source = models.ForeignKey(BackupSource, models.SET_NULL, null=True, blank=True, related_name="items")
    kind = models.CharField(max_length=KIND_MAX_LENGTH, choices=kind_choices)
    # What was backed up, for people: the source's name, plus the database for a server.
    label = models.CharField(max_length=500)
    database = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=16, choices=ItemStatus.choices, default=ItemStatus.OK)
    storage_key = models.CharField(max_length=500, blank=True)
    size = models.BigIntegerField(default=0, help_text="Bytes stored (compressed).")
    source_size = models.BigIntegerField(default=0, help_text="Bytes read from the source (uncompressed).")
    sha256 = models.CharField(max_length=64, blank=True)
    error_code = models.CharField(max_length=32, blank=True)
    error_message = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["backup_set", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["storage_key"], name="backups_item_unique_key", condition=~models.Q(storage_key="")
            ),
        ]

    def __str__(self) -> str:
        return self.label


class CheckStatus(models.TextChoices):
    QUEUED = "queued", "Waiting for a worker"
    RUNNING = "running", "Testing"
    DONE = "done", "Done"


class SourceCheck(models.Model):
    """One "Test connection" of a source: requested on a page, done by a worker (its task
    carries only this row's code), its result shown when done. Holds our own message and
    the mapped error code, never what answered on the port."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="source_checks", db_index=False)
    source = models.ForeignKey(BackupSource, models.CASCADE, related_name="checks", db_index=False)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+", db_index=False
    )
    status = models.CharField(max_length=16, choices=CheckStatus.choices, default=CheckStatus.QUEUED)
    ok = models.BooleanField(default=False)
    error_code = models.CharField(max_length=32, blank=True)
    message = models.TextField(blank=True)
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Used by the rate limit: a tenant's checks of the last minute.
            models.Index(fields=["tenant", "-created_at"], name="backups_check_tenant_time"),
            # Used by the sources page: each source's latest check.
            models.Index(fields=["source", "-created_at"], name="backups_check_source_time"),
        ]

    def __str__(self) -> str:
        return f"Test of {self.source_id} at {self.created_at:%Y-%m-%d %H:%M:%S}"

    @property
    def pending(self) -> bool:
        return self.status != CheckStatus.DONE
