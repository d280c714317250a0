"""Bad input found by fuzzing, each posted as a browser (or typed as a user) would: a clear
form error, 4xx or exit 2, never a 500 or a traceback."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError

from backups.models import BackupSet, BackupSource
from scheduling.models import BackupSchedule, BackupScheduleRun, Operation
from scheduling.runs import run_now
from scheduling.worker import execute_run
from tenants.models import Tenant
from tests.helpers import queued_tasks
from tests.scheduling.test_views_schedules import valid_data

# Each hides or rewrites what a reader sees: ANSI colour, a bidi override, an isolate,
# a zero-width space, a line separator, a bell, a tab, a newline.
UNSAFE_NAMES = [
    "\x1b[31mred\x1b[0m",
    "invoice\u202egpj.exe",
    "a\u2066b\u2069",
    "zero\u200bwidth",
    "line\u2028break",
    "bell\x07",
    "tab\there",
    "two\nlines",
]
LONG_COMPONENT = "x" * 256


@pytest.fixture
def backup_set(schedule: BackupSchedule) -> BackupSet:
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "succeeded"
    queued_tasks()
    return BackupSet.objects.get(run=run)


# ------------------------------------------------------------------ date filters


@pytest.mark.parametrize("page", ["runs", "audit"])
@pytest.mark.parametrize(
    "query", ["date_to=9999-12-31", "date_from=9999-12-31", "date_from=2026-01-01&date_to=9999-12-31"]
)
def test_the_last_day_of_the_calendar_is_a_filter_error_not_a_500(client, alice, tenant, schedule, page, query) -> None:
    client.force_login(alice)
    response = client.get(f"/t/{tenant.code}/{page}/?{query}")
    assert response.status_code == 200
    assert "Pick a day up to 9999-12-30." in response.text


@pytest.mark.parametrize("page", ["runs", "audit"])
@pytest.mark.parametrize("zone", ["Asia%2FKolkata", "Pacific%2FKiritimati", "America%2FChicago"])
def test_the_first_day_of_the_calendar_is_a_filter_error_on_any_clock(client, alice, tenant, page, zone) -> None:
    # Midnight of 0001-01-01 east of UTC is before datetime's first instant; the cookie as
    # the browser's script writes it (URL-encoded).
    client.force_login(alice)
    client.cookies["tz"] = zone
    response = client.get(f"/t/{tenant.code}/{page}/?date_from=0001-01-01&date_to=0001-01-01")
    assert response.status_code == 200
    assert "Pick a day from 0001-01-02 on." in response.text
    response = client.get(f"/t/{tenant.code}/{page}/?date_from=0001-01-02&date_to=9999-12-30")
    assert response.status_code == 200 and "Pick a day" not in response.text


@pytest.mark.parametrize("page", ["runs", "audit"])
def test_the_day_before_it_still_filters(client, alice, tenant, schedule, page) -> None:
    run_now(schedule, actor=alice)
    client.force_login(alice)
    response = client.get(f"/t/{tenant.code}/{page}/?date_from=2000-01-01&date_to=9999-12-30")
    assert response.status_code == 200
    assert "Pick a day" not in response.text


# ------------------------------------------------------------------ names


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_a_schedule_name_with_a_control_or_bidi_character_is_a_form_error(client, mia, tenant, source, name) -> None:
    client.force_login(mia)
    response = client.post(f"/t/{tenant.code}/schedules/new/", valid_data(source, name=name))
    assert response.status_code == 200
    assert "Use visible characters only" in response.text
    assert not BackupSchedule.objects.filter(tenant=tenant, name__contains=name.strip()).exists()


def test_a_plain_schedule_name_with_accents_and_spaces_is_fine(client, mia, tenant, source) -> None:
    client.force_login(mia)
    response = client.post(f"/t/{tenant.code}/schedules/new/", valid_data(source, name="Café – nightly ✓"))
    assert response.status_code == 302
    assert BackupSchedule.objects.filter(tenant=tenant, name="Café – nightly ✓").exists()


@pytest.mark.parametrize("name", UNSAFE_NAMES[:4])
def test_a_source_name_with_a_control_or_bidi_character_is_a_form_error(client, mia, tenant, settings, name) -> None:
    client.force_login(mia)
    path = settings.SOURCE_ROOTS[0] / "data"
    path.mkdir()
    response = client.post(f"/t/{tenant.code}/sources/new/", {"name": name, "kind": "directory", "path": str(path)})
    assert response.status_code == 200
    assert "Use visible characters only" in response.text
    assert not BackupSource.objects.exists()


def test_a_source_path_with_a_component_over_255_bytes_is_a_form_error(client, mia, tenant, settings) -> None:
    client.force_login(mia)
    # 128 two-byte characters: 128 characters, 256 bytes.
    for long in (LONG_COMPONENT, "é" * 128):
        path = f"{settings.SOURCE_ROOTS[0]}/{long}/data.sqlite3"
        response = client.post(f"/t/{tenant.code}/sources/new/", {"name": "Long", "kind": "sqlite", "path": path})
        assert response.status_code == 200
        assert "at most 255 bytes" in response.text
    assert not BackupSource.objects.exists()


def test_a_source_path_with_an_escape_sequence_is_a_form_error(client, mia, tenant, settings) -> None:
    client.force_login(mia)
    path = f"{settings.SOURCE_ROOTS[0]}/\x1b]0;owned\x07.sqlite3"
    response = client.post(f"/t/{tenant.code}/sources/new/", {"name": "Esc", "kind": "sqlite", "path": path})
    assert response.status_code == 200
    assert "Use visible characters only" in response.text


def test_the_admin_refuses_a_tenant_name_and_a_users_name_with_a_bidi_override(client, db) -> None:
    root = User.objects.create_superuser("root", "root@example.org", "password-for-tests")
    client.force_login(root)
    response = client.post("/admin/tenants/tenant/add/", {"name": "Acme\u202e", "file_roots": ""})
    assert response.status_code == 200
    assert "Use visible characters only" in response.text
    assert not Tenant.objects.exists()
    person = User.objects.create_user("dora", "dora@example.org", "password-for-tests")
    response = client.post(
        f"/admin/auth/user/{person.pk}/change/",
        {
            "username": "dora",
            "first_name": "Dora\u202e",
            "last_name": "\x1b[2J",
            "email": "dora@example.org",
            "is_active": "on",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
        },
    )
    assert response.status_code == 200
    assert response.text.count("Use visible characters only") == 2
    person.refresh_from_db()
    assert person.first_name == "" and person.last_name == ""


# ------------------------------------------------------------------ restore targets


def test_a_restore_target_with_a_256_byte_name_is_a_form_error(client, alice, backup_set) -> None:
    client.force_login(alice)
    response = client.post(f"/sets/{backup_set.code}/restore/", {"target": LONG_COMPONENT, "confirm": ""})
    assert response.status_code == 200
    assert "at most 255 bytes" in response.text
    assert not BackupScheduleRun.objects.filter(operation=Operation.RESTORE).exists()


@pytest.mark.parametrize("target", ["copy\u202etxt.sqlite3", "\x1b[1mcopy.sqlite3"])
def test_a_restore_target_with_a_control_or_bidi_character_is_a_form_error(client, alice, backup_set, target) -> None:
    client.force_login(alice)
    response = client.post(f"/sets/{backup_set.code}/restore/", {"target": target, "confirm": ""})
    assert response.status_code == 200
    assert "Use visible characters only" in response.text
    assert not BackupScheduleRun.objects.filter(operation=Operation.RESTORE).exists()


@pytest.mark.parametrize("target", [LONG_COMPONENT, "copy\u202e.sqlite3", "a/" + "b" * 300 + "/c"])
def test_the_restore_command_refuses_such_a_target_with_exit_2(alice, backup_set, target) -> None:
    with pytest.raises(CommandError) as caught:
        call_command("restore", str(backup_set.code), "--as", "alice", "--target", target, stdout=StringIO())
    assert caught.value.returncode == 2
    assert "visible characters" in str(caught.value) or "255 bytes" in str(caught.value)
    assert not BackupScheduleRun.objects.filter(operation=Operation.RESTORE).exists()


# ------------------------------------------------------------------ methods


def test_the_sources_list_rejects_post(client, mia, tenant) -> None:
    client.force_login(mia)
    assert client.post(f"/t/{tenant.code}/sources/").status_code == 405


def test_the_home_page_rejects_post(client, mia) -> None:
    client.force_login(mia)
    assert client.post("/").status_code == 405
