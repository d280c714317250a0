"""Notification moved from tenants to scheduling: an install with notifications keeps every
row, its links to runs, tenants and users, and its read marks (migrations tenants 0009,
scheduling 0012)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("tenants", "0008_audit_actions"), ("scheduling", "0011_recovery_pending")]
AFTER = [("tenants", "0009_notification_moves_to_scheduling"), ("scheduling", "0012_notification")]
AT = datetime(2026, 3, 1, 2, 30, tzinfo=UTC)


def _index_names(table: str) -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.get_constraints(cursor, table))


@pytest.mark.django_db(transaction=True)
def test_notifications_keep_every_row_when_they_move_to_scheduling() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    try:
        old = executor.loader.project_state(BEFORE).apps
        tenant = old.get_model("tenants", "Tenant").objects.create(name="Acme")
        user = old.get_model("auth", "User").objects.create(username="rita")
        schedule = old.get_model("scheduling", "BackupSchedule").objects.create(tenant=tenant, name="Nightly")
        run = old.get_model("scheduling", "BackupScheduleRun").objects.create(
            tenant=tenant, schedule=schedule, status="failed", created_at=AT
        )
        Old = old.get_model("tenants", "Notification")
        read = Old.objects.create(
            tenant=tenant, user=user, kind="run_failed", run=run, title="Backup failed", message="E", created_at=AT
        )
        Old.objects.filter(pk=read.pk).update(read_at=AT)
        unread = Old.objects.create(tenant=tenant, user=user, kind="slot_missed", message="missed", created_at=AT)
        before = list(Old.objects.order_by("pk").values())

        executor.loader.build_graph()
        executor.migrate(AFTER)

        New = executor.loader.project_state(AFTER).apps.get_model("scheduling", "Notification")
        assert New._meta.db_table == "scheduling_notification"
        assert list(New.objects.order_by("pk").values()) == before
        assert New.objects.get(pk=read.pk).run_id == run.pk
        assert New.objects.get(pk=unread.pk).read_at is None
        assert "tenants_notification" not in connection.introspection.table_names()
        assert {"scheduling_notif_user_time", "scheduling_notif_unread"} <= _index_names("scheduling_notification")
        # New rows take the next primary keys.
        later = New.objects.create(tenant_id=tenant.pk, user_id=user.pk, kind="run_failed", message="x", created_at=AT)
        assert later.pk > unread.pk
    finally:
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_the_move_can_be_undone_with_its_rows() -> None:
    executor = MigrationExecutor(connection)
    try:
        apps = executor.loader.project_state(AFTER).apps
        tenant = apps.get_model("tenants", "Tenant").objects.create(name="Acme")
        user = apps.get_model("auth", "User").objects.create(username="rita")
        apps.get_model("scheduling", "Notification").objects.create(
            tenant=tenant, user=user, kind="run_failed", message="E", created_at=AT
        )
        executor.migrate(BEFORE)
        Old = executor.loader.project_state(BEFORE).apps.get_model("tenants", "Notification")
        assert list(Old.objects.values_list("message", flat=True)) == ["E"]
        assert {"tenants_notif_user_time", "tenants_notif_unread"} <= _index_names("tenants_notification")
    finally:
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
