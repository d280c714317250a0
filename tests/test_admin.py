from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from backups.models import BackupSet
from scheduling.models import BackupSchedule, BackupScheduleRun, RunStatus
from tenants.models import AuditAction, AuditLog
from tests.helpers import make_stored_set

CHANGELISTS = [
    "/admin/tenants/tenant/",
    "/admin/tenants/membership/",
    "/admin/tenants/auditlog/",
    "/admin/backups/backupsource/",
    "/admin/backups/backupset/",
    "/admin/scheduling/backupschedule/",
    "/admin/scheduling/backupschedulerun/",
    "/admin/scheduling/notification/",
    "/admin/scheduling/sourcelease/",
    "/admin/backups/sourcecheck/",
    "/admin/scheduling/dispatcherbeat/",
    "/admin/scheduling/nodeclock/",
]


def test_every_model_of_the_product_is_in_the_admin_and_in_this_list() -> None:
    from django.apps import apps
    from django.contrib import admin

    ours = [
        model for label in ("tenants", "backups", "scheduling") for model in apps.get_app_config(label).get_models()
    ]
    # Items and schedule sources are edited inline in their set and schedule.
    inline = {"backupitem", "schedulesource"}
    for model in ours:
        name = model._meta.model_name
        if name in inline:
            continue
        assert model in admin.site._registry, name
        assert f"/admin/{model._meta.app_label}/{name}/" in CHANGELISTS, name


@pytest.fixture
def admin_user(db) -> User:
    return User.objects.create_superuser("root", "root@example.org", "password-for-tests")


@pytest.fixture
def backup_set(schedule) -> BackupSet:
    run = BackupScheduleRun.objects.create(
        tenant=schedule.tenant, schedule=schedule, status=RunStatus.SUCCEEDED, created_at=timezone.now()
    )
    return make_stored_set(schedule, run, sha256="0" * 64, size=1, source_size=1)


@pytest.mark.parametrize("url", CHANGELISTS)
def test_a_superuser_opens_every_changelist(client, admin_user, alice, backup_set, url) -> None:
    client.force_login(admin_user)
    response = client.get(url)
    assert response.status_code == 200
    assert client.get(url, {"q": "not-a-uuid"}).status_code == 200


def test_a_superuser_opens_the_change_page_of_a_schedule_and_a_run(client, admin_user, backup_set) -> None:
    client.force_login(admin_user)
    assert client.get(f"/admin/scheduling/backupschedule/{backup_set.run.schedule.pk}/change/").status_code == 200
    assert client.get(f"/admin/scheduling/backupschedulerun/{backup_set.run.pk}/change/").status_code == 200
    assert client.get(f"/admin/backups/backupset/{backup_set.pk}/change/").status_code == 200


def test_the_audit_log_cannot_be_added_to_or_edited(client, admin_user, schedule) -> None:
    client.force_login(admin_user)
    assert client.get("/admin/tenants/auditlog/add/").status_code == 403
    entry = AuditLog.objects.get()
    response = client.post(f"/admin/tenants/auditlog/{entry.pk}/change/", {"target_label": "forged"})
    assert response.status_code == 403
    entry.refresh_from_db()
    assert entry.target_label != "forged"


def test_editing_a_schedule_in_the_admin_goes_through_the_service(client, admin_user, schedule) -> None:
    client.force_login(admin_user)
    link = schedule.source_links.get()
    data = {
        "tenant": schedule.tenant.pk,
        "name": "Nightly",
        "source_links-TOTAL_FORMS": "1",
        "source_links-INITIAL_FORMS": "1",
        "source_links-0-id": link.pk,
        "source_links-0-schedule": schedule.pk,
        "source_links-0-source": link.source_id,
        "kind": "daily",
        "time_of_day": "05:45",
        "weekdays": "[]",
        "cron": "",
        "every_hours": "24",
        "timezone": "Europe/Berlin",
        "enabled": "on",
        "keep_last": "3",
        "keep_daily": "0",
        "keep_weekly": "0",
        "keep_monthly": "0",
        "keep_yearly": "0",
        "time_limit_minutes": "60",
        "max_attempts": "3",
    }
    response = client.post(f"/admin/scheduling/backupschedule/{schedule.pk}/change/", data)
    assert response.status_code == 302
    before = schedule.next_run_at
    schedule.refresh_from_db()
    assert schedule.next_run_at != before
    assert schedule.next_run_at.astimezone(timezone.get_fixed_timezone(0)).minute == 45
    assert AuditLog.objects.filter(action=AuditAction.SCHEDULE_UPDATED, actor=admin_user).exists()


def test_the_admin_refuses_a_source_of_another_tenant(client, admin_user, schedule, charlie) -> None:
    client.force_login(admin_user)
    data = {
        "tenant": charlie.memberships.get().tenant.pk,
        "name": "Moved",
        "source_links-TOTAL_FORMS": "1",
        "source_links-INITIAL_FORMS": "0",
        "source_links-0-source": schedule.sources.get().pk,
        "kind": "daily",
        "time_of_day": "02:30",
        "weekdays": "[]",
        "cron": "",
        "every_hours": "24",
        "timezone": "UTC",
        "enabled": "on",
        "keep_last": "3",
        "keep_daily": "0",
        "keep_weekly": "0",
        "keep_monthly": "0",
        "keep_yearly": "0",
        "time_limit_minutes": "60",
        "max_attempts": "3",
    }
    response = client.post("/admin/scheduling/backupschedule/add/", data)
    assert response.status_code == 200
    assert "This source belongs to another tenant." in response.text
    assert BackupSchedule.objects.count() == 1


def test_staff_reach_the_admin_but_members_do_not(client, alice) -> None:
    client.force_login(alice)
    response = client.get("/admin/")
    assert response.status_code == 302


def test_adding_a_source_in_the_admin_checks_the_path_and_is_audited(client, admin_user, tenant, settings) -> None:
    client.force_login(admin_user)
    outside = {"tenant": tenant.pk, "name": "Etc", "kind": "sqlite", "path": "/etc/passwd"}
    response = client.post("/admin/backups/backupsource/add/", outside)
    assert response.status_code == 200
    assert "outside the folders" in response.text
    inside = {**outside, "path": str(settings.SOURCE_ROOTS[0] / "ok.sqlite3")}
    assert client.post("/admin/backups/backupsource/add/", inside).status_code == 302
    assert AuditLog.objects.filter(action=AuditAction.SOURCE_CREATED, actor=admin_user).exists()


def test_moving_a_source_that_schedules_use_to_another_tenant_is_refused(
    client, admin_user, schedule, source, charlie
) -> None:
    client.force_login(admin_user)
    other = charlie.memberships.get().tenant
    data = {"tenant": other.pk, "name": source.name, "kind": "sqlite", "path": source.path}
    response = client.post(f"/admin/backups/backupsource/{source.pk}/change/", data)
    assert response.status_code == 200
    assert "cannot move to another tenant" in response.text and "Nightly" in response.text
    source.refresh_from_db()
    assert source.tenant_id == schedule.tenant_id


def test_changing_a_server_sources_kind_in_the_admin_clears_its_password(client, admin_user, tenant) -> None:
    from backups.models import BackupSource

    source = BackupSource(tenant=tenant, name="PG", kind="postgres", host="127.0.0.1", port=5432, username="u")
    source.set_password("admin-cannot-see-it")
    source.save()
    client.force_login(admin_user)
    data = {"tenant": tenant.pk, "name": "PG", "kind": "mysql", "path": ""}
    assert client.post(f"/admin/backups/backupsource/{source.pk}/change/", data).status_code == 302
    source.refresh_from_db()
    assert source.kind == "mysql" and not source.has_password


def test_staff_set_a_tenants_database_servers_and_it_is_audited(client, admin_user, tenant) -> None:
    client.force_login(admin_user)
    base = {
        "name": tenant.name,
        "file_roots": "\n".join(tenant.file_roots),
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
    }
    bad = client.post(f"/admin/tenants/tenant/{tenant.pk}/change/", {**base, "server_hosts": "10.0.0.0/8\nnot a host"})
    assert bad.status_code == 200 and "neither an IP address" in bad.text
    good = {**base, "server_hosts": "10.0.5.0/24\r\nDB.Example.internal.\r\n2001:db8::1"}
    assert client.post(f"/admin/tenants/tenant/{tenant.pk}/change/", good).status_code == 302
    tenant.refresh_from_db()
    assert tenant.server_hosts == ["10.0.5.0/24", "db.example.internal", "2001:db8::1/128"]
    entry = AuditLog.objects.get(action=AuditAction.TENANT_HOSTS_CHANGED)
    assert entry.details == {"before": [], "after": tenant.server_hosts}


def test_moving_a_server_source_to_a_tenant_that_may_not_reach_its_host_is_refused(
    client, admin_user, tenant, charlie
) -> None:
    from backups.models import BackupSource

    other = charlie.memberships.get().tenant
    other.server_hosts = ["10.9.8.0/24"]
    other.save()
    source = BackupSource.objects.create(
        tenant=tenant, name="PG", kind="postgres", host="127.0.0.1", port=5432, username="u"
    )
    client.force_login(admin_user)
    data = {"tenant": other.pk, "name": "PG", "kind": "postgres", "path": ""}
    response = client.post(f"/admin/backups/backupsource/{source.pk}/change/", data)
    assert response.status_code == 200 and "not among the database servers" in response.text
    source.refresh_from_db()
    assert source.tenant_id == tenant.pk


def test_a_run_that_made_a_set_cannot_be_deleted_but_one_without_can(client, admin_user, backup_set, schedule) -> None:
    # The set is found through its run (its schedule, retention, the pages): a set whose run
    # was deleted would be listed nowhere and never pruned.
    client.force_login(admin_user)
    run = backup_set.run
    assert client.post(f"/admin/scheduling/backupschedulerun/{run.pk}/delete/", {"post": "yes"}).status_code == 403
    backup_set.refresh_from_db()
    assert backup_set.run == run
    skipped = BackupScheduleRun.objects.create(
        tenant=schedule.tenant, schedule=schedule, status=RunStatus.SKIPPED, created_at=timezone.now()
    )
    response = client.post(f"/admin/scheduling/backupschedulerun/{skipped.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not BackupScheduleRun.objects.filter(pk=skipped.pk).exists()
