"""Small defects of the schedule form a new user hit: the live preview's swaps, time inputs,
the strategy control and its hints."""

from __future__ import annotations

import re
from datetime import time

import pytest
from django.utils import timezone

from scheduling.models import BackupSchedule
from tests.scheduling.test_views_schedules import valid_data

HX = {"HX-Request": "true"}


def element_ids(html: str) -> set[str]:
    return set(re.findall(r'\sid="([^"]+)"', html))


def oob_targets(html: str) -> set[str]:
    """The ids an htmx answer swaps out of band (each must exist on the page, else htmx
    logs oobErrorNoTarget)."""
    tags = re.findall(r"<[^>]*hx-swap-oob[^>]*>", html)
    return {match for tag in tags for match in re.findall(r'\sid="([^"]+)"', tag)}


# ------------------------------------------------------------------ preview swaps


def test_the_new_schedule_preview_swaps_only_what_the_page_has(client, mia, tenant, source) -> None:
    client.force_login(mia)
    page = client.get(f"/t/{tenant.code}/schedules/new/").text
    answer = client.post(f"/t/{tenant.code}/schedules/preview/", valid_data(source), headers=HX).text
    assert "<time datetime=" in answer  # the slots are there
    assert oob_targets(answer) <= element_ids(page)


def test_the_edit_preview_still_updates_the_retention_preview(client, mia, schedule, source) -> None:
    client.force_login(mia)
    page = client.get(f"/schedules/{schedule.code}/edit/").text
    url = f"/t/{schedule.tenant.code}/schedules/preview/?schedule={schedule.code}"
    answer = client.post(url, valid_data(source, name=schedule.name), headers=HX).text
    assert oob_targets(answer) == {"retention-preview"}
    assert "retention-preview" in element_ids(page)


@pytest.mark.parametrize("path", ["new", "fields"])
def test_no_partial_of_the_new_form_names_a_missing_target(client, mia, tenant, source, path) -> None:
    client.force_login(mia)
    page = client.get(f"/t/{tenant.code}/schedules/new/").text
    if path == "fields":
        answer = client.post(f"/t/{tenant.code}/schedules/fields/", valid_data(source, kind="weekly"), headers=HX).text
    else:
        answer = client.post(f"/t/{tenant.code}/schedules/preview/", valid_data(source, kind="weekly"), headers=HX).text
    assert oob_targets(answer) <= element_ids(page)


# ------------------------------------------------------------------ 24-hour times


def time_input(html: str, name: str) -> str:
    match = re.search(rf'<input[^>]*name="{name}"[^>]*>', html)
    assert match, f"no input named {name}"
    return match.group(0)


def test_the_time_of_day_is_a_24_hour_text_input_not_the_locales_clock(client, mia, schedule) -> None:
    schedule.time_of_day = time(14, 5)
    schedule.save()
    client.force_login(mia)
    tag = time_input(client.get(f"/schedules/{schedule.code}/edit/").text, "time_of_day")
    # type="time" renders 02:05 PM in an en-US browser whatever value it holds.
    assert 'type="text"' in tag and 'type="time"' not in tag
    assert 'value="14:05"' in tag and 'placeholder="HH:MM"' in tag


def test_a_settings_block_takes_24_hour_times_too(client, mia, schedule) -> None:
    client.force_login(mia)
    html = client.get(f"/t/{schedule.tenant.code}/settings/").text
    tag = time_input(html, f"s{schedule.code.hex}-time_of_day")
    assert 'type="text"' in tag and f'value="{schedule.time_of_day:%H:%M}"' in tag


@pytest.mark.parametrize("typed, saved", [("14:00", time(14, 0)), ("2:30", time(2, 30)), ("23:59", time(23, 59))])
def test_a_typed_24_hour_time_is_saved(client, mia, tenant, source, typed, saved) -> None:
    client.force_login(mia)
    response = client.post(f"/t/{tenant.code}/schedules/new/", valid_data(source, time_of_day=typed))
    assert response.status_code == 302
    assert BackupSchedule.objects.get(name="Hourly").time_of_day == saved


@pytest.mark.parametrize("typed", ["2pm", "02:00 PM", "24:00", "12:60", "noon"])
def test_a_time_that_is_not_24_hour_hh_mm_is_a_form_error(client, mia, tenant, source, typed) -> None:
    client.force_login(mia)
    response = client.post(f"/t/{tenant.code}/schedules/new/", valid_data(source, time_of_day=typed))
    assert response.status_code == 200
    assert "Enter a 24-hour time as HH:MM" in response.text
    assert not BackupSchedule.objects.exists()


# ------------------------------------------------------------------ one on/off control


def test_the_strategy_offers_no_disabled_choice_next_to_the_enabled_flag(client, mia, tenant) -> None:
    client.force_login(mia)
    html = client.get(f"/t/{tenant.code}/schedules/new/").text
    select = re.search(r'<select name="kind".*?</select>', html, re.S).group(0)
    assert re.findall(r'<option value="([^"]+)"', select) == ["daily", "weekly", "cron", "every_n_hours"]
    assert 'name="enabled"' in html and "Off: no scheduled runs; Run now still works." in html


def test_a_posted_disabled_strategy_is_a_form_error_not_a_500(client, mia, tenant, source) -> None:
    client.force_login(mia)
    response = client.post(f"/t/{tenant.code}/schedules/new/", valid_data(source, kind="disabled"))
    assert response.status_code == 200 and "Select a valid choice" in response.text
    assert not BackupSchedule.objects.exists()


def test_an_unticked_enabled_box_saves_a_schedule_that_runs_only_on_demand(client, mia, tenant, source) -> None:
    client.force_login(mia)
    data = valid_data(source)
    del data["enabled"]  # an unticked checkbox is not posted
    assert client.post(f"/t/{tenant.code}/schedules/new/", data).status_code == 302
    schedule = BackupSchedule.objects.get()
    assert (schedule.enabled, schedule.next_run_at) == (False, None)
    client.force_login(mia)
    assert client.post(f"/schedules/{schedule.code}/run/").status_code == 302
    assert schedule.runs.count() == 1  # Run now still works


def test_the_migration_turns_a_disabled_strategy_into_the_enabled_flag(tenant, source) -> None:
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    from tests.helpers import make_schedule

    run_now_only = make_schedule(tenant, source, name="Manual", kind="disabled", enabled=True)
    paused = make_schedule(tenant, source, name="Paused", kind="weekly", weekdays=[0], enabled=False)
    running = make_schedule(tenant, source, name="Nightly", kind="daily", enabled=True, next_run_at=timezone.now())
    loader = MigrationLoader(connection)
    migration = loader.get_migration("scheduling", "0009_smalls_one_on_off_control")
    before = loader.project_state(("scheduling", "0008_cron_vixie_schedules")).apps
    forward = next(op for op in migration.operations if hasattr(op, "code")).code
    forward(before, connection.schema_editor())
    rows = {s.name: (s.kind, s.enabled, s.next_run_at) for s in BackupSchedule.objects.all()}
    assert rows["Manual"] == ("daily", False, None)  # still: no scheduled runs, Run now only
    assert rows["Paused"] == ("weekly", False, None) == (paused.kind, paused.enabled, paused.next_run_at)
    assert rows["Nightly"] == ("daily", True, running.next_run_at)
    assert run_now_only.pk and not BackupSchedule.objects.filter(kind="disabled").exists()
