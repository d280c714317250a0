"""The retention preview of the schedule form: which existing sets the typed policy
would keep (and why) and which it would delete, before anything is saved."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from backups.models import BackupSet
from scheduling.models import BackupScheduleRun, RunStatus
from tests.helpers import make_schedule, make_stored_set
from tests.scheduling.test_views_schedules import valid_data

HX = {"HX-Request": "true"}


def make_set_at(schedule, created_at: datetime, **fields) -> BackupSet:
    run = BackupScheduleRun.objects.create(
        tenant=schedule.tenant, schedule=schedule, status=RunStatus.SUCCEEDED, created_at=created_at
    )
    backup_set = make_stored_set(schedule, run, **fields)
    BackupSet.objects.filter(pk=backup_set.pk).update(created_at=created_at)
    backup_set.created_at = created_at
    return backup_set


def daily_sets(schedule, count: int, **fields) -> list[BackupSet]:
    """One set a day at noon UTC, the newest yesterday; newest first."""
    noon = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)
    return [make_set_at(schedule, noon - timedelta(days=age), **fields) for age in range(count)]


def table_rows(html: str, kind: str) -> list[str]:
    """The rows of the "kept" or "deleted" table of a retention preview."""
    match = re.search(rf'<table class="table retention-table retention-{kind}">(.*?)</table>', html, re.S)
    if match is None:
        return []
    body = match.group(1).split("<tbody>", 1)[1]
    return re.findall(r"<tr>(.*?)</tr>", body, re.S)


def created(row: str) -> str:
    return re.search(r"<td>(\d{4}-\d\d-\d\d \d\d:\d\d)", row).group(1)  # type: ignore[union-attr]


def stamp(backup_set: BackupSet) -> str:
    return backup_set.created_at.strftime("%Y-%m-%d %H:%M")


def preview(client, schedule, source, **changes):
    data = valid_data(source, **{"name": schedule.name, "timezone": schedule.timezone, **changes})
    return client.post(f"/t/{schedule.tenant.code}/schedules/preview/?schedule={schedule.code}", data, headers=HX)


# ------------------------------------------------------------------ what it shows


def test_the_edit_form_shows_what_the_saved_policy_keeps_and_deletes(client, mia, schedule) -> None:
    sets = daily_sets(schedule, 5)  # the schedule keeps the last 3
    client.force_login(mia)
    response = client.get(f"/schedules/{schedule.code}/edit/")
    assert response.status_code == 200
    kept, deleted = table_rows(response.text, "kept"), table_rows(response.text, "deleted")
    assert [created(row) for row in kept] == [stamp(s) for s in sets[:3]]
    assert [created(row) for row in deleted] == [stamp(s) for s in sets[3:]]
    assert all("last 3" in row for row in kept)
    assert all("kept by no rule" in row for row in deleted)
    assert "<strong>last 3</strong>" in response.text


def test_typing_a_longer_policy_previews_keeping_more_without_saving(client, mia, schedule, source) -> None:
    sets = daily_sets(schedule, 6)
    client.force_login(mia)
    response = preview(client, schedule, source, keep_last="2", keep_daily="4")
    assert response.status_code == 200
    assert 'id="retention-preview" aria-live="polite" hx-swap-oob="true"' in response.text
    kept = table_rows(response.text, "kept")
    assert [created(row) for row in kept] == [stamp(s) for s in sets[:4]]
    assert "last 2" in kept[0] and "daily" in kept[0]
    assert "last 2" not in kept[2] and "daily" in kept[2]
    assert [created(row) for row in table_rows(response.text, "deleted")] == [stamp(s) for s in sets[4:]]
    schedule.refresh_from_db()
    assert (schedule.keep_last, schedule.keep_daily) == (3, 0)  # a preview never saves
    assert BackupSet.objects.filter(run__schedule=schedule, deleted_at__isnull=True).count() == 6  # nor deletes


def test_the_preview_counts_days_in_the_zone_typed(client, mia, schedule, source) -> None:
    # 16:00 and 14:00 UTC fall on one UTC day, so keep_daily=2 keeps only the later in UTC;
    # in Tokyo (UTC+9) they are 01:00 and 23:00 of two days, and both are kept.
    day = (timezone.now() - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    late, early = make_set_at(schedule, day + timedelta(hours=16)), make_set_at(schedule, day + timedelta(hours=14))
    client.force_login(mia)
    utc = preview(client, schedule, source, keep_last="1", keep_daily="2", timezone="UTC")
    assert [created(row) for row in table_rows(utc.text, "kept")] == [stamp(late)]
    tokyo = preview(client, schedule, source, keep_last="1", keep_daily="2", timezone="Asia/Tokyo")
    assert [created(row) for row in table_rows(tokyo.text, "kept")] == [stamp(late), stamp(early)]
    assert "days counted in Asia/Tokyo" in tokyo.text


def test_a_pinned_set_is_kept_with_its_reason(client, mia, schedule, source) -> None:
    sets = daily_sets(schedule, 4)
    BackupSet.objects.filter(pk=sets[3].pk).update(pinned=True)
    client.force_login(mia)
    response = preview(client, schedule, source, keep_last="1")
    kept = table_rows(response.text, "kept")
    assert [created(row) for row in kept] == [stamp(sets[0]), stamp(sets[3])]
    assert "pinned" in kept[1] and "Pinned</span>" in kept[1]
    assert len(table_rows(response.text, "deleted")) == 2


def test_a_partial_set_older_than_the_oldest_kept_complete_one_is_deleted_with_that_reason(
    client, mia, schedule, source
) -> None:
    sets = daily_sets(schedule, 2)
    old_partial = make_set_at(schedule, sets[1].created_at - timedelta(days=1), status="partial")
    client.force_login(mia)
    response = preview(client, schedule, source, keep_last="1", keep_daily="5")
    deleted = table_rows(response.text, "deleted")
    assert [created(row) for row in deleted] == [stamp(old_partial)]
    assert "incomplete, older than the oldest kept complete set" in deleted[0]


def test_only_this_schedules_live_sets_are_listed(client, mia, tenant, schedule, source) -> None:
    mine = daily_sets(schedule, 2)
    other = make_schedule(tenant, source, name="Other")
    daily_sets(other, 3)
    BackupSet.objects.filter(pk=mine[1].pk).update(deleted_at=timezone.now())
    client.force_login(mia)
    response = preview(client, schedule, source, keep_last="5")
    assert [created(row) for row in table_rows(response.text, "kept")] == [stamp(mine[0])]
    assert table_rows(response.text, "deleted") == []


def test_a_schedule_without_sets_says_so(client, mia, schedule, source) -> None:
    client.force_login(mia)
    response = preview(client, schedule, source, keep_last="2")
    assert "This schedule has no backup sets yet." in response.text


def test_a_new_schedule_shows_no_retention_preview(client, mia, tenant, source, schedule) -> None:
    daily_sets(schedule, 3)  # another schedule's sets are nothing to a new one
    client.force_login(mia)
    page = client.get(f"/t/{tenant.code}/schedules/new/")
    assert "What this policy keeps" not in page.text
    response = client.post(f"/t/{tenant.code}/schedules/preview/", valid_data(source, keep_last="1"), headers=HX)
    assert response.status_code == 200
    assert "retention-table" not in response.text
    assert "preview-errors" not in response.text


def test_a_form_submitted_with_errors_previews_the_posted_policy_without_javascript(
    client, mia, schedule, source
) -> None:
    sets = daily_sets(schedule, 3)
    client.force_login(mia)
    data = valid_data(source, name="", timezone=schedule.timezone, keep_last="1")  # name missing: not saved
    response = client.post(f"/schedules/{schedule.code}/edit/", data)
    assert response.status_code == 200
    assert [created(row) for row in table_rows(response.text, "deleted")] == [stamp(s) for s in sets[1:]]


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"keep_last": "0"}, "Keep last N backups:"),
        ({"keep_last": "many"}, "Enter a whole number."),
        ({"keep_daily": "-1"}, "Keep daily (days):"),
        ({"keep_yearly": ""}, "This field is required."),
        ({"timezone": "Mars/Olympus"}, "Time zone:"),
    ],
)
def test_invalid_retention_values_show_inline_never_a_500(client, mia, schedule, source, changes, message) -> None:
    daily_sets(schedule, 2)
    client.force_login(mia)
    response = preview(client, schedule, source, **changes)
    assert response.status_code == 200
    retention = response.text.split('id="retention-preview"', 1)[1]
    assert "These values are not a retention policy yet" in retention
    assert message in retention
    assert "retention-table" not in retention


# ------------------------------------------------------------------ access


def test_the_retention_preview_requires_login(client, schedule, source) -> None:
    response = preview(client, schedule, source)
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")


def test_the_retention_preview_checks_ownership(client, charlie, schedule, source) -> None:
    daily_sets(schedule, 2)
    client.force_login(charlie)
    assert preview(client, schedule, source).status_code == 404


def test_the_retention_preview_hides_another_tenants_schedule_behind_ones_own_tenant(
    client, charlie, schedule, source
) -> None:
    own = charlie.memberships.get().tenant
    client.force_login(charlie)
    data = valid_data(source, name="x")
    response = client.post(f"/t/{own.code}/schedules/preview/?schedule={schedule.code}", data, headers=HX)
    assert response.status_code == 404


def test_the_retention_preview_requires_manager(client, bob, schedule, source) -> None:
    client.force_login(bob)
    assert preview(client, schedule, source).status_code == 403


def test_the_retention_preview_rejects_get(client, mia, schedule) -> None:
    client.force_login(mia)
    response = client.get(f"/t/{schedule.tenant.code}/schedules/preview/?schedule={schedule.code}")
    assert response.status_code == 405
