"""Backup-set actions on the schedule page: the sets table, Pin / Unpin (manager),
Verify (operator) and Restore (owner), each going through the services and the queue."""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
from django.utils import timezone

from backups.engines.base import DumpTarget
from backups.engines.registry import engine_for
from backups.models import BackupItem, BackupSet, BackupSource, SourceKind, VerifyStatus
from backups.secrets import encrypt
from scheduling.models import BackupSchedule, BackupScheduleRun, Operation, RunStatus, ScheduleSource
from scheduling.runs import run_now
from scheduling.worker import execute_run
from tenants.models import AuditAction, AuditLog
from tests.conftest import make_sqlite_database
from tests.helpers import drain, make_stored_set, queued_tasks, set_of_run


def backed_up(schedule: BackupSchedule) -> BackupSet:
    """A real backup set: the schedule's sources dumped and stored by the run task."""
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "succeeded"
    queued_tasks()  # the run-now task, executed above
    return BackupSet.objects.get(run=run)


def stored_set(schedule: BackupSchedule) -> BackupSet:
    """A set row with one item and no file behind it (for pages and refusals)."""
    run = BackupScheduleRun.objects.create(
        tenant=schedule.tenant, schedule=schedule, status=RunStatus.SUCCEEDED, created_at=timezone.now()
    )
    return make_stored_set(schedule, run)


def rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT id, label FROM items ORDER BY id").fetchall()


def set_row(html: str, backup_set: BackupSet) -> str:
    match = re.search(rf'<tr id="set-{backup_set.code}">(.*?)</tr>', html, re.S)
    assert match, "the set has no row"
    return match.group(1)


def assert_login_redirect(response) -> None:
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")


def error_text(html: str) -> str:
    return " ".join(re.findall(r'<p class="message message-error" role="alert">(.*?)</p>', html, re.S))


# ------------------------------------------------------------------ the sets table


def test_the_sets_table_shows_status_size_items_verification_and_pin(client, rita, schedule) -> None:
    good = stored_set(schedule)
    failed = stored_set(schedule)
    BackupSet.objects.filter(pk=good.pk).update(
        pinned=True, verify_status=VerifyStatus.OK, verified_at=datetime(2026, 11, 20, 8, 15, tzinfo=UTC)
    )
    BackupSet.objects.filter(pk=failed.pk).update(
        status="partial", verify_status=VerifyStatus.FAILED, verify_message="The stored file is missing."
    )
    client.force_login(rita)
    html = client.get(f"/schedules/{schedule.code}/").text
    first, second = set_row(html, good), set_row(html, failed)
    assert "Pinned</span>" in first and "Pinned</span>" not in second
    assert "Complete" in first and "Partial" in second
    assert "1.2\xa0KB" in first and "ab" * 32 in first and "Shop" in first
    assert "Verified" in first and "2026-11-20 08:15 UTC" in first
    assert "Failed" in second and "The stored file is missing." in second
    assert "Not verified" not in first and "Not verified" not in second
    fresh = stored_set(schedule)
    html = client.get(f"/schedules/{schedule.code}/").text
    assert "Not verified" in set_row(html, fresh)


@pytest.mark.parametrize(
    ("user", "verify", "pin", "restore"),
    [
        ("rita", False, False, False),
        ("bob", True, False, False),
        ("mia", True, True, False),
        ("alice", True, True, True),
    ],
)
def test_each_role_sees_only_the_buttons_it_may_press(client, request, schedule, user, verify, pin, restore) -> None:
    backup_set = stored_set(schedule)
    client.force_login(request.getfixturevalue(user))
    row = set_row(client.get(f"/schedules/{schedule.code}/").text, backup_set)
    assert (f"/sets/{backup_set.code}/verify/" in row) is verify
    assert (f"/sets/{backup_set.code}/pin/" in row) is pin
    assert (f"/sets/{backup_set.code}/restore/" in row) is restore


def test_the_sets_table_takes_the_same_queries_for_one_set_or_many(client, rita, schedule) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    stored_set(schedule)
    client.force_login(rita)
    with CaptureQueriesContext(connection) as one:
        client.get(f"/schedules/{schedule.code}/")
    for _ in range(5):
        stored_set(schedule)
    with CaptureQueriesContext(connection) as six:
        client.get(f"/schedules/{schedule.code}/")
    assert len(six.captured_queries) == len(one.captured_queries)


def test_a_pinned_sets_button_unpins(client, mia, schedule) -> None:
    backup_set = stored_set(schedule)
    BackupSet.objects.filter(pk=backup_set.pk).update(pinned=True)
    client.force_login(mia)
    row = set_row(client.get(f"/schedules/{schedule.code}/").text, backup_set)
    assert f"/sets/{backup_set.code}/unpin/" in row and f"/sets/{backup_set.code}/pin/" not in row


# ------------------------------------------------------------------ pin / unpin


def test_a_manager_pins_a_set_and_it_is_audited(client, mia, schedule) -> None:
    backup_set = stored_set(schedule)
    client.force_login(mia)
    response = client.post(f"/sets/{backup_set.code}/pin/", follow=True)
    assert response.redirect_chain[-1][0] == f"/schedules/{schedule.code}/#sets-heading"
    backup_set.refresh_from_db()
    assert backup_set.pinned
    entry = AuditLog.objects.get(action=AuditAction.SET_PINNED)
    assert (entry.actor, entry.tenant) == (mia, schedule.tenant)
    assert "is pinned: retention keeps it" in response.text


def test_a_manager_unpins_a_set_and_it_is_audited(client, mia, schedule) -> None:
    backup_set = stored_set(schedule)
    BackupSet.objects.filter(pk=backup_set.pk).update(pinned=True)
    client.force_login(mia)
    response = client.post(f"/sets/{backup_set.code}/unpin/")
    assert response.status_code == 302
    backup_set.refresh_from_db()
    assert not backup_set.pinned
    assert AuditLog.objects.filter(action=AuditAction.SET_UNPINNED, actor=mia).count() == 1


def test_pinning_a_pinned_set_again_changes_nothing(client, mia, schedule) -> None:
    backup_set = stored_set(schedule)
    client.force_login(mia)
    client.post(f"/sets/{backup_set.code}/pin/")
    response = client.post(f"/sets/{backup_set.code}/pin/", follow=True)
    assert "already was" in response.text
    assert AuditLog.objects.filter(action=AuditAction.SET_PINNED).count() == 1


def test_pinning_a_set_retention_deleted_says_so(client, mia, schedule) -> None:
    backup_set = stored_set(schedule)
    BackupSet.objects.filter(pk=backup_set.pk).update(deleted_at=timezone.now())
    client.force_login(mia)
    response = client.post(f"/sets/{backup_set.code}/pin/", follow=True)
    assert response.status_code == 200
    assert "already been deleted by retention" in response.text
    assert not BackupSet.objects.get(pk=backup_set.pk).pinned


def test_pinning_with_htmx_redraws_the_row_and_shows_a_toast(client, mia, schedule) -> None:
    backup_set = stored_set(schedule)
    client.force_login(mia)
    response = client.post(f"/sets/{backup_set.code}/pin/", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "<html" not in response.text
    row = set_row(response.text, backup_set)
    assert "Pinned</span>" in row and f"/sets/{backup_set.code}/unpin/" in row
    assert f"/sets/{backup_set.code}/restore/" not in row  # still drawn for a manager, not an owner
    assert 'hx-swap-oob="innerHTML:#messages"' in response.text and "is pinned" in response.text
    response = client.post(f"/sets/{backup_set.code}/unpin/", headers={"HX-Request": "true"})
    row = set_row(response.text, backup_set)
    assert "Pinned</span>" not in row and f"/sets/{backup_set.code}/pin/" in row


def test_pinning_a_deleted_set_with_htmx_removes_its_row_and_says_why(client, mia, schedule) -> None:
    backup_set = stored_set(schedule)
    BackupSet.objects.filter(pk=backup_set.pk).update(deleted_at=timezone.now())
    client.force_login(mia)
    response = client.post(f"/sets/{backup_set.code}/pin/", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert f'id="set-{backup_set.code}"' not in response.text
    assert "already been deleted by retention" in response.text


@pytest.mark.parametrize("action", ["pin", "unpin"])
def test_pin_and_unpin_require_login(client, schedule, action) -> None:
    assert_login_redirect(client.post(f"/sets/{stored_set(schedule).code}/{action}/"))


@pytest.mark.parametrize("action", ["pin", "unpin"])
def test_pin_and_unpin_check_ownership(client, charlie, schedule, action) -> None:
    backup_set = stored_set(schedule)
    client.force_login(charlie)
    assert client.post(f"/sets/{backup_set.code}/{action}/").status_code == 404
    assert not AuditLog.objects.filter(action__in=[AuditAction.SET_PINNED, AuditAction.SET_UNPINNED]).exists()


@pytest.mark.parametrize("action", ["pin", "unpin"])
def test_pin_and_unpin_require_manager(client, bob, schedule, action) -> None:
    backup_set = stored_set(schedule)
    client.force_login(bob)
    assert client.post(f"/sets/{backup_set.code}/{action}/").status_code == 403
    assert BackupSet.objects.get(pk=backup_set.pk).pinned is False


@pytest.mark.parametrize("action", ["pin", "unpin"])
def test_pin_and_unpin_reject_get(client, mia, schedule, action) -> None:
    backup_set = stored_set(schedule)
    client.force_login(mia)
    assert client.get(f"/sets/{backup_set.code}/{action}/").status_code == 405
    assert BackupSet.objects.get(pk=backup_set.pk).pinned is False


# ------------------------------------------------------------------ verify


def test_an_operator_queues_a_verify_run_and_lands_on_its_page(
    client, bob, schedule, django_capture_on_commit_callbacks
) -> None:
    backup_set = backed_up(schedule)
    client.force_login(bob)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/sets/{backup_set.code}/verify/")
    run = BackupScheduleRun.objects.get(operation=Operation.VERIFY)
    assert response.status_code == 302 and response.url == f"/runs/{run.code}/"
    assert (run.subject_set, run.status, run.requested_by) == (backup_set, RunStatus.QUEUED, bob)
    assert AuditLog.objects.filter(action=AuditAction.VERIFY_REQUESTED, actor=bob).count() == 1
    row = set_row(client.get(f"/schedules/{schedule.code}/").text, backup_set)
    assert f'<a href="/runs/{run.code}/">Verify queued</a>' in row  # the way to the run, until it ends
    assert drain() == ["succeeded"]  # through the queue, as the cluster runs it
    row = set_row(client.get(f"/schedules/{schedule.code}/").text, backup_set)
    assert f"/runs/{run.code}/" not in row
    assert "Verified" in row and "Not verified" not in row


def test_verifying_a_set_retention_deleted_is_refused_with_its_reason(client, bob, schedule) -> None:
    backup_set = stored_set(schedule)
    BackupSet.objects.filter(pk=backup_set.pk).update(deleted_at=timezone.now())
    client.force_login(bob)
    response = client.post(f"/sets/{backup_set.code}/verify/", follow=True)
    assert response.status_code == 200
    assert "deleted by retention" in response.text
    assert not BackupScheduleRun.objects.filter(operation=Operation.VERIFY).exists()


def test_verify_requires_login(client, schedule) -> None:
    assert_login_redirect(client.post(f"/sets/{stored_set(schedule).code}/verify/"))


def test_verify_checks_ownership(client, charlie, schedule) -> None:
    backup_set = stored_set(schedule)
    client.force_login(charlie)
    assert client.post(f"/sets/{backup_set.code}/verify/").status_code == 404


def test_verify_requires_operator(client, rita, schedule) -> None:
    backup_set = stored_set(schedule)
    client.force_login(rita)
    assert client.post(f"/sets/{backup_set.code}/verify/").status_code == 403
    assert not BackupScheduleRun.objects.filter(operation=Operation.VERIFY).exists()


def test_verify_rejects_get(client, bob, schedule) -> None:
    backup_set = stored_set(schedule)
    client.force_login(bob)
    assert client.get(f"/sets/{backup_set.code}/verify/").status_code == 405


# ------------------------------------------------------------------ restore: the page


def test_the_restore_page_shows_the_engines_default_target(client, alice, schedule, source) -> None:
    backup_set = stored_set(schedule)
    client.force_login(alice)
    with time_machine.travel(datetime(2026, 11, 27, 6, 30, 5, tzinfo=UTC), tick=False):
        response = client.get(f"/sets/{backup_set.code}/restore/")
        expected = engine_for("sqlite").default_restore_target(
            source, DumpTarget(label="Shop"), timezone.now().strftime("%Y%m%d-%H%M%S")
        )
    assert response.status_code == 200
    assert expected.path and f"<code>{expected.path}</code>" in response.text
    assert expected.path != source.path
    for field in ("target", "overwrite", "confirm"):
        assert f'name="{field}"' in response.text
    assert "type the target&#x27;s exact name" in response.text


def test_restoring_with_no_target_named_writes_a_new_copy(
    client, alice, schedule, source, django_capture_on_commit_callbacks
) -> None:
    backup_set = backed_up(schedule)
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/sets/{backup_set.code}/restore/", {"target": "", "confirm": ""})
    run = BackupScheduleRun.objects.get(operation=Operation.RESTORE)
    assert response.status_code == 302 and response.url == f"/runs/{run.code}/"
    (entry,) = run.restore_target["items"]
    target = Path(entry["path"])
    assert target != Path(source.path) and not target.exists() and entry["overwrite"] is False
    assert drain() == ["succeeded"]
    assert rows(target) == rows(Path(source.path))
    assert AuditLog.objects.filter(action=AuditAction.RESTORE_REQUESTED, actor=alice).count() == 1


def test_restoring_into_a_named_new_file_beside_the_source(
    client, alice, schedule, source, django_capture_on_commit_callbacks
) -> None:
    backup_set = backed_up(schedule)
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/sets/{backup_set.code}/restore/", {"target": "copy.sqlite3"})
    assert response.status_code == 302
    assert drain() == ["succeeded"]
    copy = Path(source.path).parent / "copy.sqlite3"
    assert rows(copy) == rows(Path(source.path))


def test_an_existing_target_without_overwrite_is_refused_as_a_form_error(client, alice, schedule, settings) -> None:
    backup_set = stored_set(schedule)
    existing = make_sqlite_database(settings.SOURCE_ROOTS[0] / "live.sqlite3", rows=3)
    client.force_login(alice)
    response = client.post(f"/sets/{backup_set.code}/restore/", {"target": str(existing)})
    assert response.status_code == 200
    assert "exists" in error_text(response.text) and str(existing) in error_text(response.text)
    assert not BackupScheduleRun.objects.filter(operation=Operation.RESTORE).exists()
    assert len(rows(existing)) == 3


@pytest.mark.parametrize("typed", ["", "live", "LIVE.sqlite3", "live.sqlite3 "])
def test_overwriting_needs_the_exact_name_typed(client, alice, schedule, settings, typed) -> None:
    backup_set = stored_set(schedule)
    existing = make_sqlite_database(settings.SOURCE_ROOTS[0] / "live.sqlite3", rows=3)
    client.force_login(alice)
    # A trailing space is stripped, so "live.sqlite3 " is the name of a file name only, not its path.
    response = client.post(
        f"/sets/{backup_set.code}/restore/", {"target": str(existing), "overwrite": "on", "confirm": typed}
    )
    assert response.status_code == 200
    assert "exactly to confirm" in error_text(response.text)
    assert not BackupScheduleRun.objects.filter(operation=Operation.RESTORE).exists()


def test_overwriting_with_the_name_typed_replaces_the_target(
    client, alice, schedule, source, settings, django_capture_on_commit_callbacks
) -> None:
    backup_set = backed_up(schedule)
    existing = make_sqlite_database(settings.SOURCE_ROOTS[0] / "live.sqlite3", rows=3)
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/sets/{backup_set.code}/restore/", {"target": str(existing), "overwrite": "on", "confirm": str(existing)}
        )
    run = BackupScheduleRun.objects.get(operation=Operation.RESTORE)
    assert response.url == f"/runs/{run.code}/"
    assert run.restore_target["items"][0]["overwrite"] is True
    assert drain() == ["succeeded"]
    assert rows(existing) == rows(Path(source.path))


def test_overwrite_without_a_target_named_is_a_form_error(client, alice, schedule) -> None:
    backup_set = stored_set(schedule)
    client.force_login(alice)
    response = client.post(f"/sets/{backup_set.code}/restore/", {"overwrite": "on", "confirm": "x"})
    assert response.status_code == 200
    assert "Name the target to overwrite" in error_text(response.text)
    assert not BackupScheduleRun.objects.filter(operation=Operation.RESTORE).exists()


def test_a_target_outside_the_tenants_roots_is_refused(client, alice, schedule, tmp_path) -> None:
    backup_set = stored_set(schedule)
    client.force_login(alice)
    response = client.post(f"/sets/{backup_set.code}/restore/", {"target": str(tmp_path / "elsewhere.sqlite3")})
    assert response.status_code == 200
    assert error_text(response.text)
    assert not BackupScheduleRun.objects.filter(operation=Operation.RESTORE).exists()


def test_a_too_long_target_is_a_form_error_not_a_500(client, alice, schedule) -> None:
    backup_set = stored_set(schedule)
    client.force_login(alice)
    response = client.post(f"/sets/{backup_set.code}/restore/", {"target": "x" * 1001})
    assert response.status_code == 200
    assert "at most 1000 characters" in response.text


# ------------------------------------------------------------------ restore: several items


@pytest.fixture
def two_source_set(schedule, tenant, settings) -> BackupSet:
    path = make_sqlite_database(settings.SOURCE_ROOTS[0] / "crm.sqlite3", rows=7)
    crm = BackupSource.objects.create(tenant=tenant, name="CRM", path=str(path))
    ScheduleSource.objects.create(schedule=schedule, source=crm)
    return backed_up(schedule)


def test_a_set_of_several_items_restores_all_or_links_each(
    client, alice, two_source_set, django_capture_on_commit_callbacks
) -> None:
    client.force_login(alice)
    page = client.get(f"/sets/{two_source_set.code}/restore/").text
    items = list(two_source_set.items.order_by("id"))
    assert len(items) == 2
    for item in items:
        assert f"/sets/{two_source_set.code}/restore/{item.code}/" in page
    assert 'name="target"' not in page  # a target is named per item
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/sets/{two_source_set.code}/restore/", {})
    run = BackupScheduleRun.objects.get(operation=Operation.RESTORE)
    assert response.url == f"/runs/{run.code}/"
    assert [entry["label"] for entry in run.restore_target["items"]] == [item.label for item in items]
    assert {item.label for item in items} == {"Shop", "CRM"}


def test_naming_one_target_for_several_items_is_a_form_error(client, alice, two_source_set) -> None:
    client.force_login(alice)
    response = client.post(f"/sets/{two_source_set.code}/restore/", {"target": "copy.sqlite3"})
    assert response.status_code == 200
    assert "choose one below" in error_text(response.text)
    assert not BackupScheduleRun.objects.filter(operation=Operation.RESTORE).exists()


def test_one_item_of_several_restores_into_the_named_target(
    client, alice, two_source_set, settings, django_capture_on_commit_callbacks
) -> None:
    crm = two_source_set.items.get(label="CRM")
    client.force_login(alice)
    assert "CRM" in client.get(f"/sets/{two_source_set.code}/restore/{crm.code}/").text
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/sets/{two_source_set.code}/restore/{crm.code}/", {"target": "crm-copy.sqlite3"})
    run = BackupScheduleRun.objects.get(operation=Operation.RESTORE)
    assert [entry["label"] for entry in run.restore_target["items"]] == ["CRM"]
    assert drain() == ["succeeded"]
    assert len(rows(settings.SOURCE_ROOTS[0] / "crm-copy.sqlite3")) == 7


def test_an_item_of_another_set_is_not_found(client, alice, schedule, two_source_set) -> None:
    other = stored_set(schedule)
    client.force_login(alice)
    item = two_source_set.items.first()
    assert client.get(f"/sets/{other.code}/restore/{item.code}/").status_code == 404


# ------------------------------------------------------------------ restore: access and secrets


def test_restore_requires_login(client, schedule) -> None:
    assert_login_redirect(client.get(f"/sets/{stored_set(schedule).code}/restore/"))


def test_restore_checks_ownership(client, charlie, schedule) -> None:
    backup_set = stored_set(schedule)
    client.force_login(charlie)
    assert client.get(f"/sets/{backup_set.code}/restore/").status_code == 404
    assert client.post(f"/sets/{backup_set.code}/restore/", {}).status_code == 404


@pytest.mark.parametrize("user", ["mia", "bob", "rita"])
def test_restore_requires_owner(client, request, schedule, user) -> None:
    backup_set = stored_set(schedule)
    client.force_login(request.getfixturevalue(user))
    assert client.get(f"/sets/{backup_set.code}/restore/").status_code == 403
    assert client.post(f"/sets/{backup_set.code}/restore/", {}).status_code == 403
    assert not BackupScheduleRun.objects.filter(operation=Operation.RESTORE).exists()


def test_restore_rejects_other_methods(client, alice, schedule) -> None:
    backup_set = stored_set(schedule)
    client.force_login(alice)
    assert client.put(f"/sets/{backup_set.code}/restore/").status_code == 405
    assert client.delete(f"/sets/{backup_set.code}/restore/").status_code == 405


def test_no_secret_of_a_server_source_reaches_the_pages_the_run_or_the_audit(client, alice, tenant, schedule) -> None:
    password = "S3cret-pw-that-must-not-show"
    server = BackupSource.objects.create(
        tenant=tenant,
        name="Orders server",
        kind=SourceKind.POSTGRES,
        host="db.internal",
        database="orders",
        username="backup",
        password_encrypted=encrypt(password),
    )
    run = BackupScheduleRun.objects.create(
        tenant=tenant, schedule=schedule, status=RunStatus.SUCCEEDED, created_at=timezone.now()
    )
    backup_set = set_of_run(run, tenant=tenant, created_at=timezone.now())
    BackupItem.objects.create(
        backup_set=backup_set, source=server, kind=server.kind, label="Orders server / orders", database="orders",
        storage_key="k-orders", sha256="cd" * 32,
    )  # fmt: skip
    secrets = (password, server.password_encrypted)
    client.force_login(alice)
    page = client.get(f"/sets/{backup_set.code}/restore/").text
    assert "Orders server / orders" in page
    response = client.post(f"/sets/{backup_set.code}/restore/", {"target": "orders_copy"}, follow=True)
    restore = BackupScheduleRun.objects.get(operation=Operation.RESTORE)
    assert restore.restore_target["items"][0]["database"] == "orders_copy"
    audit = str(list(AuditLog.objects.values_list("details", flat=True)))
    for text in (
        page,
        response.text,
        client.get(f"/schedules/{schedule.code}/").text,
        str(restore.restore_target),
        audit,
    ):
        assert not any(secret in text for secret in secrets)


def test_the_messages_name_a_set_on_the_viewers_clock(client, mia, alice, schedule) -> None:
    backup_set = stored_set(schedule)
    BackupSet.objects.filter(pk=backup_set.pk).update(created_at=datetime(2026, 7, 1, 17, 4, tzinfo=UTC))
    client.force_login(mia)
    client.cookies["tz"] = "America%2FChicago"  # as static/js/app.js writes it
    response = client.post(f"/sets/{backup_set.code}/pin/", follow=True)
    assert "Backup set 2026-07-01 12:04 CDT is pinned" in response.text
    client.force_login(alice)  # restores are the owner's
    page = client.get(f"/sets/{backup_set.code}/restore/").text
    assert "<h1>Restore backup set 2026-07-01 12:04 CDT" in page
