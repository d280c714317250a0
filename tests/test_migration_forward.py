"""An install at the schema before the one-way move (a set pointing at its run and
schedule, leases in backups, notifications in tenants) migrates forward with every
row and every link kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

# The leaf migrations of each app before the move.
BEFORE = [
    ("scheduling", "0011_recovery_pending"),
    ("backups", "0005_plain_names"),
    ("tenants", "0008_audit_actions"),
]
NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def migrate(targets: list[tuple[str, str]] | None = None) -> Any:
    """Migrate to `targets` (default: every app's latest); the apps of that state."""
    executor = MigrationExecutor(connection)
    targets = targets or executor.loader.graph.leaf_nodes()
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps


def model(apps: Any, *candidates: tuple[str, str]) -> Any:
    """The first of `candidates` (app, model) the state has: a model may have moved."""
    for app_label, name in candidates:
        try:
            return apps.get_model(app_label, name)
        except LookupError:
            continue
    raise LookupError(candidates)


def build_old_rows(apps: Any) -> dict[str, Any]:
    User = apps.get_model("auth", "User")
    Tenant = apps.get_model("tenants", "Tenant")
    Source = apps.get_model("backups", "BackupSource")
    Schedule = apps.get_model("scheduling", "BackupSchedule")
    ScheduleSource = apps.get_model("scheduling", "ScheduleSource")
    Run = apps.get_model("scheduling", "BackupScheduleRun")
    Set = apps.get_model("backups", "BackupSet")
    Item = apps.get_model("backups", "BackupItem")
    Lease = apps.get_model("backups", "SourceLease")
    Notification = model(apps, ("tenants", "Notification"), ("scheduling", "Notification"))

    user = User.objects.create(username="alice")
    tenant = Tenant.objects.create(name="Acme")
    source = Source.objects.create(tenant=tenant, name="Shop", kind="sqlite", path="/srv/shop.sqlite3")
    schedule = Schedule.objects.create(tenant=tenant, name="Nightly")
    ScheduleSource.objects.create(schedule=schedule, source=source)
    made = Run.objects.create(
        tenant=tenant, schedule=schedule, trigger="scheduled", status="succeeded", created_at=NOW, finished_at=NOW
    )
    failed = Run.objects.create(
        tenant=tenant, schedule=schedule, trigger="manual", status="failed", created_at=NOW + timedelta(hours=1)
    )
    backup_set = Set.objects.create(tenant=tenant, schedule=schedule, run=made, size=10, created_at=NOW)
    item = Item.objects.create(
        backup_set=backup_set, source=source, kind="sqlite", label="Shop", storage_key="k/0.zst", size=10
    )
    verify = Run.objects.create(
        tenant=tenant,
        schedule=schedule,
        trigger="manual",
        operation="verify",
        subject_set=backup_set,
        status="running",
        created_at=NOW + timedelta(hours=2),
    )
    lease = Lease.objects.create(source=source, run=verify, acquired_at=NOW)
    notification = Notification.objects.create(
        tenant=tenant, user=user, kind="run_failed", run=failed, message="Backup failed", created_at=NOW
    )
    return {
        "made": made.pk,
        "failed": failed.pk,
        "verify": verify.pk,
        "set": backup_set.pk,
        "item": item.pk,
        "lease": lease.pk,
        "notification": notification.pk,
        "schedule": schedule.pk,
        "source": source.pk,
    }


@pytest.mark.django_db(transaction=True)
def test_runs_sets_items_leases_and_notifications_survive_the_move() -> None:
    try:
        old = migrate(BEFORE)
        ids = build_old_rows(old)
        new = migrate()
    finally:
        migrate()  # whatever happened, later tests get the latest schema
    Run = new.get_model("scheduling", "BackupScheduleRun")
    Set = new.get_model("backups", "BackupSet")
    Item = new.get_model("backups", "BackupItem")
    Lease = new.get_model("scheduling", "SourceLease")
    Notification = model(new, ("scheduling", "Notification"), ("tenants", "Notification"))

    made = Run.objects.get(pk=ids["made"])
    assert made.backup_set_id == ids["set"]
    backup_set = Set.objects.get(pk=ids["set"])
    assert backup_set.run.pk == ids["made"] and backup_set.run.schedule_id == ids["schedule"]
    assert list(Item.objects.filter(backup_set=backup_set).values_list("pk", flat=True)) == [ids["item"]]
    assert Run.objects.get(pk=ids["failed"]).backup_set_id is None
    verify = Run.objects.get(pk=ids["verify"])
    assert verify.subject_set_id == ids["set"] and verify.trigger == "request"  # not "Run now" any more
    assert Run.objects.get(pk=ids["failed"]).trigger == "manual"
    lease = Lease.objects.get(pk=ids["lease"])
    assert (lease.run_id, lease.source_id) == (ids["verify"], ids["source"])
    notification = Notification.objects.get(pk=ids["notification"])
    assert notification.run_id == ids["failed"] and notification.message == "Backup failed"
    assert Run.objects.count() == 3 and Set.objects.count() == 1 and Lease.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_move_goes_back_too() -> None:
    """Going back puts the links on the set again (a downgrade keeps the data)."""
    try:
        old = migrate(BEFORE)
        ids = build_old_rows(old)
        migrate()
        back = migrate(BEFORE)
        Set = back.get_model("backups", "BackupSet")
        Lease = back.get_model("backups", "SourceLease")
        backup_set = Set.objects.get(pk=ids["set"])
        assert (backup_set.run_id, backup_set.schedule_id) == (ids["made"], ids["schedule"])
        assert Lease.objects.get(pk=ids["lease"]).run_id == ids["verify"]
        Run = back.get_model("scheduling", "BackupScheduleRun")
        assert Run.objects.get(pk=ids["verify"]).trigger == "manual"
    finally:
        migrate()
