"""An install at the schema before the one-way move (a set pointing at its run and
schedule, leases in backups, notifications in tenants) migrates forward with every
row and every link kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.exceptions import IrreversibleError
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from scheduling.dispatch import release_due_retries

# The leaf migrations of each app before the move.
BEFORE = [
    ("scheduling", "0011_recovery_pending"),
    ("backups", "0005_plain_names"),
    ("tenants", "0008_audit_actions"),
]
NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
# Counted before and after: (app, model) candidates, a model may have moved.
COUNTED = {
    "runs": [("scheduling", "BackupScheduleRun")],
    "sets": [("backups", "BackupSet")],
    "items": [("backups", "BackupItem")],
    "leases": [("scheduling", "SourceLease"), ("backups", "SourceLease")],
    "notifications": [("scheduling", "Notification"), ("tenants", "Notification")],
}


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


def counts(apps: Any) -> dict[str, int]:
    return {name: model(apps, *candidates).objects.count() for name, candidates in COUNTED.items()}


def constraint_names(table: str) -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.get_constraints(cursor, table))


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
    restore = Run.objects.create(
        tenant=tenant,
        schedule=schedule,
        trigger="manual",
        operation="restore",
        subject_set=backup_set,
        restore_target={"kind": "sqlite", "path": "/srv/restored.sqlite3"},
        status="succeeded",
        created_at=NOW + timedelta(hours=3),
    )
    # Its set was removed since: the verify run keeps no subject.
    orphan_verify = Run.objects.create(
        tenant=tenant, schedule=schedule, trigger="manual", operation="verify", status="failed", created_at=NOW
    )
    older = Run.objects.create(
        tenant=tenant, schedule=schedule, status="succeeded", created_at=NOW - timedelta(days=1), finished_at=NOW
    )
    deleted_set = Set.objects.create(
        tenant=tenant, schedule=schedule, run=older, size=5, created_at=NOW - timedelta(days=1), deleted_at=NOW
    )
    retry = Run.objects.create(
        tenant=tenant,
        schedule=schedule,
        trigger="retry",
        status="queued",
        created_at=NOW,
        not_before=timezone.now() + timedelta(days=1),
    )
    # Its task was pushed under the worker task's old path (backups.tasks.execute_run).
    weekly = Schedule.objects.create(tenant=tenant, name="Weekly")
    pushed = Run.objects.create(
        tenant=tenant, schedule=weekly, trigger="manual", status="queued", created_at=NOW, enqueued_at=NOW
    )
    system = Notification.objects.create(
        tenant=tenant, user=user, kind="slot_missed", message="Slot missed", created_at=NOW
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
        "restore": restore.pk,
        "orphan_verify": orphan_verify.pk,
        "older": older.pk,
        "deleted_set": deleted_set.pk,
        "retry": retry.pk,
        "pushed": pushed.pk,
        "system": system.pk,
    }


@pytest.mark.django_db(transaction=True)
def test_runs_sets_items_leases_and_notifications_survive_the_move() -> None:
    try:
        old = migrate(BEFORE)
        ids = build_old_rows(old)
        before = counts(old)
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
    assert counts(new) == before
    assert before == {"runs": 8, "sets": 2, "items": 1, "leases": 1, "notifications": 2}

    restore = Run.objects.get(pk=ids["restore"])
    assert restore.subject_set_id == ids["set"] and restore.trigger == "request"
    assert restore.restore_target == {"kind": "sqlite", "path": "/srv/restored.sqlite3"}
    assert restore.backup_set_id is None
    orphan_verify = Run.objects.get(pk=ids["orphan_verify"])
    assert orphan_verify.subject_set_id is None and orphan_verify.trigger == "request"
    deleted_set = Set.objects.get(pk=ids["deleted_set"])
    assert deleted_set.deleted_at == NOW and deleted_set.run.pk == ids["older"]
    assert Notification.objects.get(pk=ids["system"]).run_id is None

    assert {"scheduling_notif_user_time", "scheduling_notif_unread"} <= constraint_names("scheduling_notification")
    assert "scheduling_run_set_by_schedule" in constraint_names("scheduling_backupschedulerun")
    assert "backups_set_live_by_schedule" not in constraint_names("backups_backupset")
    # Each set joins the series named by its schedule's code, which retention reads.
    Schedule = new.get_model("scheduling", "BackupSchedule")
    code = Schedule.objects.get(pk=ids["schedule"]).code
    assert {backup_set.series, deleted_set.series} == {code}
    assert "backups_set_live_by_series" in constraint_names("backups_backupset")


@pytest.mark.django_db(transaction=True)
def test_runs_whose_task_names_the_old_path_are_pushed_again_by_the_next_pass() -> None:
    try:
        old = migrate(BEFORE)
        ids = build_old_rows(old)
        new = migrate()
    finally:
        migrate()
    Run = new.get_model("scheduling", "BackupScheduleRun")
    pushed = Run.objects.get(pk=ids["pushed"])
    assert pushed.enqueued_at is None and pushed.status == "queued"
    retry = Run.objects.get(pk=ids["retry"])
    assert retry.enqueued_at is None and retry.not_before is not None  # still waits for its time

    with mock.patch("scheduling.dispatch.enqueue_runs") as enqueue_runs:
        assert release_due_retries(timezone.now()) == 1
    enqueue_runs.assert_called_once_with([pushed.code])


@pytest.mark.django_db(transaction=True)
def test_content_types_and_their_permissions_follow_the_moved_models() -> None:
    try:
        migrate(BEFORE)
        # contenttypes and auth stay at their latest schema: their own models fit.
        # The install's rows before the move: content types under the old apps only.
        ContentType.objects.filter(app_label="scheduling", model__in=["notification", "sourcelease"]).delete()
        notification_type = ContentType.objects.get_or_create(app_label="tenants", model="notification")[0]
        lease_type = ContentType.objects.get_or_create(app_label="backups", model="sourcelease")[0]
        may_read = Permission.objects.get_or_create(
            content_type=notification_type, codename="view_notification", defaults={"name": "Can view notification"}
        )[0]
        auditors = Group.objects.create(name="auditors")
        auditors.permissions.add(may_read)

        migrate()
    finally:
        migrate()
    assert ContentType.objects.get(pk=notification_type.pk).app_label == "scheduling"
    assert ContentType.objects.get(pk=lease_type.pk).app_label == "scheduling"
    assert not ContentType.objects.filter(app_label="tenants", model="notification").exists()
    assert not ContentType.objects.filter(app_label="backups", model="sourcelease").exists()
    granted = Group.objects.get(name="auditors").permissions.get()
    assert (granted.content_type.app_label, granted.codename) == ("scheduling", "view_notification")


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
        # Every link, the soft-deleted set's included.
        links = dict(Set.objects.values_list("pk", "run_id"))
        assert links == {ids["set"]: ids["made"], ids["deleted_set"]: ids["older"]}
        assert Set.objects.get(pk=ids["deleted_set"]).deleted_at == NOW
        assert "backups_set_live_by_schedule" in constraint_names("backups_backupset")
    finally:
        migrate()


@pytest.mark.django_db(transaction=True)
def test_going_back_stops_with_a_clear_message_when_a_set_has_no_run() -> None:
    try:
        old = migrate(BEFORE)
        ids = build_old_rows(old)
        new = migrate()
        # A run deleted since the move: its set stays, with no run (SET_NULL).
        new.get_model("scheduling", "BackupScheduleRun").objects.filter(pk=ids["older"]).delete()
        with pytest.raises(IrreversibleError, match=r"1 backup set\(s\) have no run.*Delete those sets"):
            migrate(BEFORE)
        # Nothing changed: the set keeps its place, the other set its run.
        Set = new.get_model("backups", "BackupSet")
        assert Set.objects.filter(pk=ids["deleted_set"]).exists()
        assert new.get_model("scheduling", "BackupScheduleRun").objects.get(pk=ids["made"]).backup_set_id == ids["set"]
    finally:
        migrate()
