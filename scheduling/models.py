from __future__ import annotations

import uuid
from datetime import time, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from lib.slots import (
    MAX_EVERY_HOURS,
    MAX_TIME_LIMIT_MINUTES,
    MIN_EVERY_HOURS,
    Cadence,
    InvalidCadence,
    all_zone_names,
    validate,
)
from tenants.models import Tenant
from tenants.validators import validate_plain_text

if TYPE_CHECKING:
    from backups.models import BackupSet, BackupSource


class ScheduleKind(models.TextChoices):
    """When a schedule runs. Whether it runs at all is `enabled` alone (one concept, one
    control): a "Disabled" strategy beside "Enabled: yes" said two things at once."""

    DAILY = "daily", "Daily"
    WEEKLY = "weekly", "Weekly"
    CRON = "cron", "Cron expression"
    EVERY_N_HOURS = "every_n_hours", "Every N hours"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    # Some items of the backup set failed; the set holds the others.
    PARTIAL = "partial", "Partial"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    MISSED = "missed", "Missed"
    CANCELED = "canceled", "Canceled"


ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


class Trigger(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    MANUAL = "manual", "Run now"
    RETRY = "retry", "Retry"
    # A verify or restore someone asked for on a backup set (never "Run now").
    REQUEST = "request", "Requested"


class Operation(models.TextChoices):
    """What a run does. Verify and restore act on an existing backup set."""

    BACKUP = "backup", "Backup"
    VERIFY = "verify", "Verify"
    RESTORE = "restore", "Restore"


# What a person edits on a schedule (the admin adds the tenant).
EDITABLE_FIELDS = (
    "name",
    "sources",
    "kind",
    "time_of_day",
    "weekdays",
    "cron",
    "every_hours",
    "timezone",
    "enabled",
    "keep_last",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "time_limit_minutes",
    "max_attempts",
)

MAX_ATTEMPTS = 10


class BackupSchedule(models.Model):
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="schedules")
    name = models.CharField(max_length=200, validators=[validate_plain_text])
    sources: models.ManyToManyField[BackupSource, ScheduleSource] = models.ManyToManyField(
        "backups.BackupSource", through="ScheduleSource", related_name="schedules"
    )
    kind = models.CharField(max_length=16, choices=ScheduleKind.choices, default=ScheduleKind.DAILY)
    time_of_day = models.TimeField(default=time(2, 0))
    weekdays = models.JSONField(default=list, blank=True, help_text="0 = Monday ... 6 = Sunday")
    cron = models.CharField(max_length=200, blank=True)
    every_hours = models.PositiveSmallIntegerField(default=24)
    # Phase of an every-N-hours schedule (UTC). Set when N or the time of day
    # changes, never on other edits, so the grid does not drift.
    anchor_at = models.DateTimeField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    # Off: no scheduled runs (Run now still works).
    enabled = models.BooleanField(default=True, help_text="Off: no scheduled runs; Run now still works.")
    # Retention (grandfather-father-son in the schedule's zone): the last N sets, plus
    # the newest set of each of the last D days / W weeks / M months / Y years.
    keep_last = models.PositiveIntegerField(default=7)
    keep_daily = models.PositiveIntegerField(default=0)
    keep_weekly = models.PositiveIntegerField(default=0)
    keep_monthly = models.PositiveIntegerField(default=0)
    keep_yearly = models.PositiveIntegerField(default=0)
    # A dump still going after this long is killed and the run fails as TIMEOUT.
    time_limit_minutes = models.PositiveIntegerField(default=360)
    # Attempts in all for a run failing with a retryable error (1 = no automatic retry).
    max_attempts = models.PositiveSmallIntegerField(default=3)
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_status = models.CharField(max_length=16, choices=RunStatus.choices, blank=True)
    # People were told of a failed or partial backup and not yet that it works again:
    # the next good backup clears it by compare-and-swap and says so, exactly once
    # (scheduling/notifications.py), whatever order late and lost runs finish in.
    recovery_pending = models.BooleanField(default=False, db_default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="scheduling_schedule_unique_name"),
            models.CheckConstraint(
                condition=Q(every_hours__gte=1, every_hours__lte=168), name="scheduling_schedule_every_hours_range"
            ),
            models.CheckConstraint(condition=Q(keep_last__gte=1), name="scheduling_schedule_keep_last_min"),
            models.CheckConstraint(
                condition=Q(time_limit_minutes__gte=1, time_limit_minutes__lte=MAX_TIME_LIMIT_MINUTES),
                name="scheduling_schedule_time_limit_range",
            ),
            models.CheckConstraint(
                condition=Q(max_attempts__gte=1, max_attempts__lte=MAX_ATTEMPTS),
                name="scheduling_schedule_max_attempts_range",
            ),
        ]
        indexes = [
            # Used by the dispatcher: enabled schedules whose slot has come.
            models.Index(fields=["next_run_at"], name="scheduling_schedule_due", condition=Q(enabled=True)),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Every way in (forms, admin, commands) gets the same clear messages."""
        errors: dict[str, str] = {}
        if self.timezone not in all_zone_names():
            errors["timezone"] = f"Unknown time zone “{self.timezone}”. Use an IANA name such as Europe/Berlin."
        if self.keep_last is not None and self.keep_last < 1:
            errors["keep_last"] = "Keep at least 1 backup."
        if self.every_hours is not None and not MIN_EVERY_HOURS <= self.every_hours <= MAX_EVERY_HOURS:
            errors["every_hours"] = f"N must be between {MIN_EVERY_HOURS} and {MAX_EVERY_HOURS} hours."
        if self.kind == ScheduleKind.WEEKLY:
            days = self.weekdays if isinstance(self.weekdays, list) else []
            if not days:
                errors["weekdays"] = "Pick at least one weekday for a weekly schedule."
            elif not all(isinstance(d, int) and 0 <= d <= 6 for d in days):
                errors["weekdays"] = "Weekdays are numbered 0 (Monday) to 6 (Sunday)."
        if self.kind == ScheduleKind.CRON and "timezone" not in errors:
            try:
                validate(Cadence("cron", self.timezone, cron=self.cron))
            except InvalidCadence as exc:
                errors["cron"] = str(exc)
        if self.time_limit_minutes is not None and not 1 <= self.time_limit_minutes <= MAX_TIME_LIMIT_MINUTES:
            errors["time_limit_minutes"] = f"The time limit must be between 1 and {MAX_TIME_LIMIT_MINUTES} minutes."
        if self.max_attempts is not None and not 1 <= self.max_attempts <= MAX_ATTEMPTS:
            errors["max_attempts"] = f"Attempts must be between 1 and {MAX_ATTEMPTS}."
        if errors:
            raise ValidationError(errors)

    @property
    def cadence(self) -> Cadence:
        return Cadence(
            kind=self.kind,
            tz=self.timezone,
            time_of_day=self.time_of_day,
            weekdays=frozenset(self.weekdays or ()),
            cron=self.cron,
            every_hours=self.every_hours,
            anchor=self.anchor_at,
        )


class ScheduleSource(models.Model):
    """A source a schedule covers. PROTECT: a source in use cannot be deleted."""

    schedule = models.ForeignKey(BackupSchedule, models.CASCADE, related_name="source_links")
    source = models.ForeignKey("backups.BackupSource", models.PROTECT, related_name="schedule_links")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["schedule", "source"], name="scheduling_schedule_source_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.schedule_id} covers {self.source_id}"


class BackupScheduleRun(models.Model):
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # db_index=False: the composite indexes below lead with these columns.
    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="runs", db_index=False)
    schedule = models.ForeignKey(BackupSchedule, models.CASCADE, related_name="runs", db_index=False)
    # The planned instant for scheduled runs (UTC); NULL for Run now and Retry.
    slot = models.DateTimeField(null=True, blank=True)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.SCHEDULED)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    # db_default: the dispatcher's bulk insert leaves these columns out.
    operation = models.CharField(
        max_length=16, choices=Operation.choices, default=Operation.BACKUP, db_default=Operation.BACKUP
    )
    # Verify and restore runs: the set they act on.
    subject_set = models.ForeignKey(
        "backups.BackupSet", models.SET_NULL, null=True, blank=True, related_name="operations"
    )
    # Backup runs: the set this run made (none while it runs, or if it stored nothing).
    # The run points at the set, never the set at the run: backups knows no run.
    # SET_NULL: deleting a set by hand keeps the run's history.
    backup_set = models.OneToOneField("backups.BackupSet", models.SET_NULL, null=True, blank=True, related_name="run")
    # Restore runs: where to (database name or folder path, overwrite flag). Never a secret.
    restore_target = models.JSONField(null=True, blank=True)
    # An automatic retry waits until then (capped exponential backoff with jitter);
    # the dispatcher pushes its task when it comes.
    not_before = models.DateTimeField(null=True, blank=True)
    # Compressed bytes written so far, updated while the run is going.
    bytes_written = models.BigIntegerField(default=0, db_default=0)
    attempt = models.PositiveSmallIntegerField(default=1)
    retry_of = models.ForeignKey("self", models.SET_NULL, null=True, blank=True, related_name="retries")
    # No index: only a user's deletion looks runs up by it, and every index slows the dispatcher's insert.
    requested_by = models.ForeignKey(
        "auth.User", models.SET_NULL, null=True, blank=True, related_name="+", db_index=False
    )
    missed_count = models.PositiveIntegerField(default=0)
    error_code = models.CharField(max_length=32, blank=True)
    error_message = models.TextField(blank=True)
    created_at = models.DateTimeField()
    # Last time a task for this run was pushed to a broker outside the database
    # (Redis); the dispatcher pushes again if a queued run's task may have been lost.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # Touched every HEARTBEAT seconds by the worker while it runs; a running run whose
    # heartbeat stops is failed by the dispatcher (the worker crashed or was killed).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    log = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Exactly once per slot: a repeated pass or a second dispatcher can't add one.
            models.UniqueConstraint(
                fields=["schedule", "slot"], name="scheduling_run_one_per_slot", condition=Q(slot__isnull=False)
            ),
            # At most one queued-or-running backup per schedule, whoever creates it.
            models.UniqueConstraint(
                fields=["schedule"],
                name="scheduling_run_one_active",
                condition=Q(status__in=["queued", "running"], operation="backup"),
            ),
            # One queued-or-running verify, and one restore, per backup set: repeated
            # requests would only pile up behind the first and hold workers from others.
            models.UniqueConstraint(
                fields=["subject_set", "operation"],
                name="scheduling_run_one_active_per_set",
                condition=Q(status__in=["queued", "running"], operation__in=["verify", "restore"]),
            ),
        ]
        indexes = [
            # Used by the tenant's run list, newest first.
            models.Index(fields=["tenant", "-created_at"], name="scheduling_run_tenant_time"),
            # Used by a schedule's history, newest first.
            models.Index(fields=["schedule", "-created_at"], name="scheduling_run_schedule_time"),
            # Used by the runs page's status filter, newest first (scheduling/views/runs.py):
            # without it "failed runs" walks the tenant's whole history to find a few.
            models.Index(fields=["tenant", "status", "-created_at"], name="scheduling_run_tenant_status"),
            # Used by the dispatcher's look for queued runs whose task may be lost.
            models.Index(fields=["enqueued_at"], name="scheduling_run_queued", condition=Q(status="queued")),
            # Used by the dispatcher's look for automatic retries whose time has come.
            models.Index(
                fields=["not_before"],
                name="scheduling_run_waiting_retry",
                condition=Q(status="queued", enqueued_at__isnull=True),
            ),
            # Used by the dispatcher's look for runs whose worker died.
            models.Index(fields=["heartbeat_at"], name="scheduling_run_heartbeat", condition=Q(status="running")),
            # Used by retention (scheduling/retention.py live_sets): a schedule's sets, through its runs.
            models.Index(
                fields=["schedule", "backup_set"],
                name="scheduling_run_set_by_schedule",
                condition=Q(backup_set__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        # Names the schedule: audit entries and admin lists show this (they select_related it).
        return f"{self.schedule.name}: {self.get_trigger_display()} run"

    @property
    def duration(self) -> timedelta | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


def run_of(backup_set: BackupSet) -> BackupScheduleRun | None:
    """The run that made `backup_set`, or None: only for a set whose run was removed outside
    the product (the admin keeps a run with a set; a schedule goes with its sets)."""
    # The reverse accessor raises a subclass of AttributeError when there is none.
    run: BackupScheduleRun | None = getattr(backup_set, "run", None)
    return run


class SourceLease(models.Model):
    """A source is backed up by one run at a time: the run holding its lease.

    The unique source makes taking a lease race-free across workers and nodes."""

    source = models.OneToOneField("backups.BackupSource", models.CASCADE, related_name="lease")
    run = models.ForeignKey(BackupScheduleRun, models.CASCADE, related_name="leases")
    acquired_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.source} leased by run {self.run_id}"


class DispatcherBeat(models.Model):
    """When the last dispatcher pass ran, and on which node (one row, pk 1).

    A cluster that is not running starts no backup and records no failure, so nothing
    else would tell; pages and /healthz read this row to say so (scheduling/health.py)."""

    at = models.DateTimeField()
    node = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return f"last dispatcher pass {self.at:%Y-%m-%d %H:%M:%S} UTC on {self.node or '?'}"


class NodeClock(models.Model):
    """How far a node's clock was from the database's at its last dispatcher pass, one
    row per node (the node as DispatcherBeat names it).

    Every instant nodes judge each other by is the database's (scheduling/dbclock.py);
    this row is how an operator learns that one node's clock is off anyway, and a node
    beyond CLOCK_SKEW_LIMIT_SECONDS marks no slot missed (scheduling/health.py says so)."""

    node = models.CharField(max_length=200, unique=True)
    measured_at = models.DateTimeField()  # the database's clock
    offset_seconds = models.FloatField()  # the node's clock minus the database's: positive, it is ahead
    round_trip_seconds = models.FloatField()  # the reading is uncertain by half of it

    def __str__(self) -> str:
        return f"{self.node}: {self.offset_seconds:+.3f} s from the database's clock"


class NotificationKind(models.TextChoices):
    RUN_FAILED = "run_failed", "Run failed"
    RUN_PARTIAL = "run_partial", "Run partly failed"
    SLOT_MISSED = "slot_missed", "Slot missed"
    RUN_REQUESTED = "run_requested", "Run now / Retry requested"
    RESTORE_FINISHED = "restore_finished", "Restore finished"
    RUN_RECOVERED = "run_recovered", "Backups work again"


class Notification(models.Model):
    """An in-app notification for one member of a tenant (the bell)."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, models.CASCADE, related_name="notifications", db_index=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="notifications", db_index=False)
    kind = models.CharField(max_length=32, choices=NotificationKind.choices)
    run = models.ForeignKey(BackupScheduleRun, models.SET_NULL, null=True, blank=True, related_name="+", db_index=False)
    # What the list shows ("Backup of “Shop DB” failed after 3 attempts"); the detail,
    # one click away, is `message` (the error, the names). Blank on older rows.
    title = models.CharField(max_length=200, blank=True)
    message = models.CharField(max_length=500)
    created_at = models.DateTimeField()
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Used by the bell: a user's notifications in a tenant, newest first.
            models.Index(fields=["user", "tenant", "-created_at"], name="scheduling_notif_user_time"),
            # Used by the bell's unread count.
            models.Index(fields=["user", "tenant"], name="scheduling_notif_unread", condition=Q(read_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return self.title or self.message

    @property
    def headline(self) -> str:
        """The short line the list shows (rows from before titles: their message, cut)."""
        if self.title:
            return self.title
        return self.message if len(self.message) <= 120 else self.message[:119] + "…"
