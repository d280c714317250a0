from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
import time_machine
from django.core.exceptions import ValidationError

from backups.services import save_source
from backups.services import snapshot as source_snapshot
from scheduling.models import BackupSchedule, ScheduleKind
from scheduling.services import delete_schedule, save_schedule, set_enabled, snapshot
from scheduling.sources import SourceInUse, delete_source
from tenants.models import AuditAction, AuditLog


def new_schedule(tenant, source, **fields) -> BackupSchedule:
    schedule = BackupSchedule(tenant=tenant, name=fields.pop("name", "S"), **fields)
    schedule.full_clean()
    return save_schedule(schedule, None, actor=None, sources=[source])


@time_machine.travel(datetime(2026, 11, 23, 10, 7, tzinfo=UTC), tick=False)
def test_every_n_hours_is_anchored_and_edits_of_other_fields_keep_its_grid(tenant, source, alice) -> None:
    schedule = new_schedule(
        tenant, source, kind=ScheduleKind.EVERY_N_HOURS, every_hours=6, time_of_day=time(1, 0), timezone="Asia/Tokyo"
    )
    assert schedule.anchor_at == datetime(2026, 11, 22, 16, 0, tzinfo=UTC)  # 01:00 JST on the 23rd
    assert schedule.next_run_at == datetime(2026, 11, 23, 16, 0, tzinfo=UTC)
    with time_machine.travel(datetime(2026, 11, 25, 7, 13, tzinfo=UTC), tick=False):
        before = snapshot(schedule)
        schedule.name, schedule.keep_last = "Renamed", 9
        save_schedule(schedule, before, actor=alice)
        assert schedule.anchor_at == datetime(2026, 11, 22, 16, 0, tzinfo=UTC)
        before = snapshot(schedule)
        schedule.every_hours = 4
        save_schedule(schedule, before, actor=alice)
        assert schedule.anchor_at == datetime(2026, 11, 24, 16, 0, tzinfo=UTC)  # re-anchored on today's 01:00 JST
        assert schedule.next_run_at == datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    entry = AuditLog.objects.filter(action=AuditAction.SCHEDULE_UPDATED).first()
    assert entry is not None and entry.actor == alice and entry.details["changes"]["every_hours"] == [6, 4]


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"kind": ScheduleKind.CRON, "cron": "61 * * * *"}, "cron", "Invalid cron"),
        ({"kind": ScheduleKind.CRON, "cron": "0 0 30 2 *"}, "cron", "never matches"),
        ({"timezone": "Europe/Atlantis"}, "timezone", "Unknown time zone"),
        ({"kind": ScheduleKind.EVERY_N_HOURS, "every_hours": 0}, "every_hours", "between 1 and 168"),
        ({"kind": ScheduleKind.EVERY_N_HOURS, "every_hours": 169}, "every_hours", "between 1 and 168"),
        ({"kind": ScheduleKind.WEEKLY, "weekdays": []}, "weekdays", "at least one weekday"),
        ({"keep_last": 0}, "keep_last", "at least 1"),
    ],
)
def test_bad_input_gets_a_clear_message_and_is_never_saved(tenant, source, fields, field, message) -> None:
    schedule = BackupSchedule(tenant=tenant, name="Bad", **fields)
    with pytest.raises(ValidationError) as caught:
        schedule.full_clean()
    assert message in " ".join(caught.value.message_dict[field])
    assert not BackupSchedule.objects.filter(name="Bad").exists()


@time_machine.travel(datetime(2026, 11, 23, 10, 7, tzinfo=UTC), tick=False)
def test_disabling_clears_next_run_and_enabling_counts_from_now(schedule, alice) -> None:
    set_enabled(schedule, False, alice)
    assert schedule.next_run_at is None
    with time_machine.travel(datetime(2026, 12, 1, 3, 0, tzinfo=UTC), tick=False):
        set_enabled(schedule, True, alice)
    assert schedule.next_run_at == datetime(2026, 12, 2, 1, 30, tzinfo=UTC)  # no catch-up of the days off
    actions = list(AuditLog.objects.values_list("action", flat=True))
    assert AuditAction.SCHEDULE_DISABLED in actions and AuditAction.SCHEDULE_ENABLED in actions


def test_deleting_a_schedule_is_audited(schedule, alice) -> None:
    delete_schedule(schedule, alice)
    assert not BackupSchedule.objects.exists()
    assert AuditLog.objects.get(action=AuditAction.SCHEDULE_DELETED).target_label == "Nightly"


def test_a_source_path_must_stay_inside_the_allowed_roots(tenant, source, settings, tmp_path) -> None:
    outside = tmp_path / "outside.sqlite3"
    outside.touch()
    escape = settings.SOURCE_ROOTS[0] / "link.sqlite3"
    escape.symlink_to(outside)
    for path in ["/etc/passwd", str(settings.SOURCE_ROOTS[0] / ".." / "outside.sqlite3"), str(escape), "relative.db"]:
        source.path = path
        with pytest.raises(ValidationError) as caught:
            source.full_clean()
        assert "path" in caught.value.message_dict, path


def test_a_source_in_use_is_not_deleted(schedule, source, alice) -> None:
    with pytest.raises(SourceInUse, match="Nightly"):
        delete_source(source, alice)
    delete_schedule(schedule, alice)
    delete_source(source, alice)
    assert AuditLog.objects.filter(action=AuditAction.SOURCE_DELETED).count() == 1


def test_source_changes_are_audited(source, alice) -> None:
    before = source_snapshot(source)
    source.name = "Shop (primary)"
    save_source(source, before, alice)
    entry = AuditLog.objects.get(action=AuditAction.SOURCE_UPDATED)
    assert entry.details == {"changes": {"name": ["Shop", "Shop (primary)"]}}


def test_a_schedule_with_backups_or_an_active_run_is_not_deleted(schedule, alice) -> None:
    from scheduling.models import BackupScheduleRun
    from scheduling.runs import run_now
    from scheduling.services import ScheduleInUse
    from scheduling.worker import execute_run

    run = run_now(schedule, actor=None)
    with pytest.raises(ScheduleInUse, match="queued or running"):
        delete_schedule(schedule, alice)
    execute_run(str(run.code))
    with pytest.raises(ScheduleInUse, match="has backup sets: an owner can delete it together with them"):
        delete_schedule(schedule, alice)
    assert BackupScheduleRun.objects.filter(pk=run.pk).exists()
    assert not AuditLog.objects.filter(action=AuditAction.SCHEDULE_DELETED).exists()


def test_a_schedule_cannot_use_another_tenants_source(schedule, charlie) -> None:
    from backups.models import BackupSource

    foreign = BackupSource.objects.create(tenant=charlie.memberships.get().tenant, name="Theirs", path="/x")
    with pytest.raises(ValueError, match="own tenant"):
        save_schedule(schedule, snapshot(schedule), actor=None, sources=[foreign])
    assert list(schedule.sources.all()) != [foreign]


def test_an_edit_that_does_not_touch_timing_keeps_a_due_slot(schedule, alice) -> None:
    """Regression: renaming or changing keep-last recomputed next_run_at from now,
    dropping a slot that was due but not yet dispatched."""
    from scheduling.dispatch import run_pass
    from scheduling.models import BackupScheduleRun

    due = datetime(2026, 11, 24, 1, 30, tzinfo=UTC)
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=due)
    schedule.refresh_from_db()
    with time_machine.travel(due + timedelta(minutes=2), tick=False):
        before = snapshot(schedule)
        schedule.name, schedule.keep_last = "Nightly (shop)", 10
        save_schedule(schedule, before, actor=alice)
        assert schedule.next_run_at == due
        assert run_pass(due + timedelta(minutes=2)).created == 1
    assert BackupScheduleRun.objects.get().slot == due
    with time_machine.travel(due + timedelta(minutes=3), tick=False):
        before = snapshot(schedule)
        schedule.time_of_day = time(4, 0)
        save_schedule(schedule, before, actor=alice)
    assert schedule.next_run_at == datetime(2026, 11, 24, 3, 0, tzinfo=UTC)  # timing changed: from now
