"""Schedules saved under the old cron reading: the migration, the dispatcher, the forms and the zone lists."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.apps import apps

from scheduling.dispatch import run_pass
from scheduling.models import BackupSchedule, RunStatus, ScheduleKind
from tests.helpers import make_schedule
from tests.scheduling.test_views_schedules import valid_data

migration = importlib.import_module("scheduling.migrations.0008_cron_vixie_schedules")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_the_migration_moves_next_runs_to_the_vixie_reading(tenant, source, capsys) -> None:
    # Stored while croniter read '2-2' as every hour: its next run was the coming hour.
    hourly_by_mistake = make_schedule(
        tenant, source, name="a", kind="cron", cron="30 2-2 * * *", next_run_at=utc(2026, 6, 1, 3, 30)
    )
    first_sunday = make_schedule(
        tenant, source, name="b", kind="cron", cron="1 1 1-7 * */7", next_run_at=utc(2026, 6, 2, 1, 1)
    )
    right = make_schedule(tenant, source, name="c", kind="cron", cron="30 2 * * *", next_run_at=utc(2026, 6, 1, 2, 30))
    refused = make_schedule(tenant, source, name="d", kind="cron", cron="0 22-2 * * *", next_run_at=utc(2026, 6, 1, 23))
    migration.forwards(apps, None)
    expected = {
        hourly_by_mistake: utc(2026, 6, 2, 2, 30),
        first_sunday: utc(2026, 6, 7, 1, 1),
        right: utc(2026, 6, 1, 2, 30),
        refused: utc(2026, 6, 1, 23),  # left for the dispatcher to explain
    }
    for schedule, next_run in expected.items():
        schedule.refresh_from_db()
        assert schedule.next_run_at == next_run, schedule.cron
    told = capsys.readouterr().out
    assert f"schedule {refused.pk} (d): Invalid cron expression '0 22-2 * * *': Range 22-2 runs backwards" in told
    assert "1 enabled cron schedule(s) will be skipped" in told


def test_the_migration_gives_factory_and_localtime_real_zones(tenant, source, tmp_path: Path, monkeypatch) -> None:
    factory = make_schedule(tenant, source, name="f", timezone="Factory")
    local = make_schedule(tenant, source, name="l", timezone="localtime")
    link = tmp_path / "localtime"
    link.symlink_to("/usr/share/zoneinfo/Europe/Berlin")
    monkeypatch.setattr(migration, "LOCALTIME", link)
    migration.forwards(apps, None)
    factory.refresh_from_db()
    local.refresh_from_db()
    assert (factory.timezone, local.timezone) == ("UTC", "Europe/Berlin")


def test_localtime_that_names_no_zone_stays_for_the_dispatcher_to_explain(tmp_path: Path) -> None:
    plain_file = tmp_path / "localtime"
    plain_file.write_bytes(b"TZif")
    assert migration.local_zone_name(plain_file) is None
    assert migration.local_zone_name(tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"kind": "cron", "cron": "0 22-2 * * *"}, "Range 22-2 runs backwards; cron does not wrap ranges"),
        ({"kind": "cron", "cron": "R 2 * * *"}, "Random (R) and hashed (H) values are not supported"),
        ({"kind": "cron", "cron": "0 0 L * *"}, "are not part of Vixie cron"),
        ({"kind": "daily", "timezone": "localtime"}, "Unknown time zone 'localtime'"),
    ],
)
def test_a_stored_schedule_now_refused_is_skipped_with_the_reason(tenant, source, fields, reason) -> None:
    slot = utc(2026, 6, 1, 2)
    broken = make_schedule(tenant, source, name="old", next_run_at=slot, **fields)
    report = run_pass(slot)
    assert (report.due, report.created, report.skipped) == (1, 0, 1)
    broken.refresh_from_db()
    assert broken.next_run_at is None
    (skip,) = broken.runs.all()
    assert skip.status == RunStatus.SKIPPED and reason in skip.error_message and "Fix and save" in skip.error_message


@pytest.mark.parametrize("zone", ["localtime", "Factory", "posixrules"])
def test_the_form_refuses_a_zone_that_is_no_place(client, mia, tenant, source, zone) -> None:
    client.force_login(mia)
    response = client.post(f"/t/{tenant.code}/schedules/new/", valid_data(source, name="Zoned", timezone=zone))
    assert response.status_code == 200
    assert "Unknown time zone" in response.text
    assert not BackupSchedule.objects.filter(name="Zoned").exists()


def test_the_form_refuses_a_wrapped_range_in_our_words(client, mia, tenant, source) -> None:
    client.force_login(mia)
    data = valid_data(source, name="Nightly", kind=ScheduleKind.CRON, cron="0 22-2 * * *")
    response = client.post(f"/t/{tenant.code}/schedules/new/", data)
    assert response.status_code == 200 and "cron does not wrap ranges" in response.text
    assert not BackupSchedule.objects.filter(name="Nightly").exists()


def test_the_zone_pickers_offer_canonical_zones_only(client, mia, tenant, schedule) -> None:
    client.force_login(mia)
    for url in (f"/t/{tenant.code}/schedules/new/", f"/t/{tenant.code}/settings/"):
        text = client.get(url).text
        assert '<option value="Europe/Oslo">' in text and '<option value="UTC">' in text
        for name in ("localtime", "Factory", "posixrules", "US/Eastern"):
            assert f'<option value="{name}">' not in text, (url, name)


def test_a_stored_expression_no_date_matches_is_refused_by_the_migration_and_skipped(tenant, source, capsys) -> None:
    # croniter's OR rule ran it on February's even weekdays; Vixie's AND rule ('*/2' starts
    # with '*') wants a 30 February: it never runs.
    stored = utc(2027, 2, 2)
    never = make_schedule(tenant, source, name="n", kind="cron", cron="0 0 30 2 */2", next_run_at=stored)
    migration.forwards(apps, None)
    told = capsys.readouterr().out
    assert f"schedule {never.pk} (n): The cron expression '0 0 30 2 */2' never matches a real date." in told
    report = run_pass(stored)
    assert (report.due, report.created, report.skipped) == (1, 0, 1)  # not queued at the stored slot
    never.refresh_from_db()
    assert never.next_run_at is None
    (skip,) = never.runs.all()
    assert skip.status == RunStatus.SKIPPED and skip.slot == stored
    assert "never matches a real date" in skip.error_message and "Fix and save" in skip.error_message


def test_the_migration_writes_an_upper_case_macro_as_cron_reads_it(tenant, source, capsys) -> None:
    stored = utc(2026, 6, 2)
    daily = make_schedule(tenant, source, name="u", kind="cron", cron="@DAILY", next_run_at=stored)
    migration.forwards(apps, None)
    daily.refresh_from_db()
    assert (daily.cron, daily.next_run_at) == ("@daily", stored)
    assert "will be skipped" not in capsys.readouterr().out
    assert run_pass(stored).created == 1
