"""backups.retention on real rows and real files: apply, preview, pins."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine

from backups import storage
from backups.models import BackupItem, BackupSet, ItemStatus, SetStatus, VerifyStatus
from backups.retention import PinRefused
from lib.retention import NOT_KEPT, PARTIAL_OUTSIDE
from scheduling import retention
from scheduling.models import BackupSchedule, BackupScheduleRun, Operation, RunStatus, Trigger
from scheduling.retention import IN_USE, apply_retention, preview_retention, set_pinned
from scheduling.runs import run_now
from scheduling.worker import execute_run
from tenants.models import AuditAction, AuditLog, Tenant
from tests.helpers import make_schedule, set_of_run, stored_path

BERLIN = ZoneInfo("Europe/Berlin")


def berlin(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).astimezone(UTC)


def stored_set(
    schedule: BackupSchedule,
    created_at: datetime,
    status: str = SetStatus.COMPLETE,
    pinned: bool = False,
    verify_status: str = VerifyStatus.NEVER,
) -> BackupSet:
    """A set as a finished run leaves it, with a real stored file (and, if partial, a failed item)."""
    run = BackupScheduleRun.objects.create(
        tenant_id=schedule.tenant_id,
        schedule=schedule,
        trigger=Trigger.MANUAL,
        status=RunStatus.SUCCEEDED if status == SetStatus.COMPLETE else RunStatus.PARTIAL,
        created_at=created_at,
        finished_at=created_at,
    )
    backup_set = set_of_run(
        run,
        tenant_id=schedule.tenant_id,
        status=status,
        pinned=pinned,
        verify_status=verify_status,
        created_at=created_at,
    )
    key = f"{schedule.tenant.code}/{schedule.code}/{run.code}-0.sqlite3.zst"
    stored = storage.store_stream(key, io.BytesIO(b"a dump " * 100))
    BackupItem.objects.create(
        backup_set=backup_set, kind="sqlite", label="Shop", storage_key=key, size=stored.size, sha256=stored.sha256
    )
    if status == SetStatus.PARTIAL:
        BackupItem.objects.create(
            backup_set=backup_set, kind="sqlite", label="Gone", status=ItemStatus.FAILED, error_code="SOURCE_NOT_FOUND"
        )
    return backup_set


def file_of(backup_set: BackupSet):
    return stored_path(backup_set.items.exclude(storage_key="").get().storage_key)


def live_ids(schedule: BackupSchedule) -> list[int]:
    return list(BackupSet.objects.filter(run__schedule=schedule, deleted_at__isnull=True).values_list("pk", flat=True))


def set_policy(schedule: BackupSchedule, **fields) -> None:
    BackupSchedule.objects.filter(pk=schedule.pk).update(**fields)
    schedule.refresh_from_db()


def test_retention_keeps_what_the_policy_keeps_in_the_schedules_zone_and_removes_the_rest(schedule) -> None:
    set_policy(schedule, keep_last=1, keep_daily=2, keep_weekly=2)
    newest = stored_set(schedule, berlin("2026-11-26T00:30"))  # 25th 23:30 in UTC: a Berlin day apart
    evening = stored_set(schedule, berlin("2026-11-25T21:00"))
    morning = stored_set(schedule, berlin("2026-11-25T02:30"))
    sunday = stored_set(schedule, berlin("2026-11-22T02:30"))
    saturday = stored_set(schedule, berlin("2026-11-21T02:30"))
    pruned = apply_retention(schedule)
    assert [s.pk for s in pruned] == [morning.pk, saturday.pk]
    assert live_ids(schedule) == [newest.pk, evening.pk, sunday.pk]
    for backup_set in pruned:
        backup_set.refresh_from_db()
        assert backup_set.deleted_at is not None
        assert not file_of(backup_set).exists()
    assert all(file_of(s).exists() for s in (newest, evening, sunday))


def test_each_pruned_set_is_audited_with_its_reason_and_the_policy_and_nothing_else(schedule) -> None:
    set_policy(schedule, keep_last=1, keep_monthly=1)
    stored_set(schedule, berlin("2026-11-26T02:30"))
    old_partial = stored_set(schedule, berlin("2026-11-20T02:30"), status=SetStatus.PARTIAL)
    old = stored_set(schedule, berlin("2026-10-20T02:30"))
    apply_retention(schedule)
    entries = {e.target_code: e for e in AuditLog.objects.filter(action=AuditAction.SET_PRUNED)}
    assert set(entries) == {old_partial.code, old.code}
    entry = entries[old.code]
    assert entry.actor is None and entry.tenant_id == schedule.tenant_id
    assert entry.details == {
        "schedule": str(schedule.code),
        "created_at": old.created_at.isoformat(),
        "status": "complete",
        "reason": NOT_KEPT,
        "policy": "last 1, monthly 1",
        "keep_last": 1,
        "keep_daily": 0,
        "keep_weekly": 0,
        "keep_monthly": 1,
        "keep_yearly": 0,
        "timezone": "Europe/Berlin",
    }
    assert entries[old_partial.code].details["reason"] == PARTIAL_OUTSIDE


def test_retention_never_touches_another_schedules_or_tenants_sets(schedule, source, tenant) -> None:
    set_policy(schedule, keep_last=1)
    sibling = make_schedule(tenant, source, name="Sibling", keep_last=1)
    stranger = make_schedule(Tenant.objects.create(name="Someone else"), None, name="Theirs", keep_last=1)
    theirs = [stored_set(s, berlin(f"2026-01-0{d}T02:30")) for s in (sibling, stranger) for d in (1, 2)]
    mine = [stored_set(schedule, berlin(f"2026-11-2{d}T02:30")) for d in (4, 5, 6)]
    pruned = apply_retention(schedule)
    assert {s.pk for s in pruned} == {mine[0].pk, mine[1].pk}
    assert BackupSet.objects.filter(pk__in=[s.pk for s in theirs], deleted_at__isnull=True).count() == 4
    assert all(file_of(s).exists() for s in theirs)


def test_a_pinned_set_survives_retention_and_is_pruned_after_being_unpinned(schedule, mia) -> None:
    set_policy(schedule, keep_last=1)
    old = stored_set(schedule, berlin("2026-11-20T02:30"))
    newest = stored_set(schedule, berlin("2026-11-26T02:30"))
    assert set_pinned(old, True, actor=mia) is True
    assert apply_retention(schedule) == []
    assert set_pinned(old, False, actor=mia) is True
    old.refresh_from_db()
    assert old.deleted_at is None  # unpinning deletes nothing by itself
    assert [s.pk for s in apply_retention(schedule)] == [old.pk]
    assert live_ids(schedule) == [newest.pk]


def test_a_set_pinned_while_retention_runs_is_kept(schedule, monkeypatch) -> None:
    set_policy(schedule, keep_last=1)
    stored_set(schedule, berlin("2026-11-26T02:30"))
    old = stored_set(schedule, berlin("2026-11-20T02:30"))
    real_decide = retention._decide

    def pin_meanwhile(schedule, live):
        decision = real_decide(schedule, live)
        # A member pins the set after retention decided, before it marks.
        BackupSet.objects.filter(pk=old.pk).update(pinned=True)
        return decision

    monkeypatch.setattr(retention, "_decide", pin_meanwhile)
    assert apply_retention(schedule) == []
    old.refresh_from_db()
    assert old.deleted_at is None and file_of(old).exists()
    assert not AuditLog.objects.filter(action=AuditAction.SET_PRUNED).exists()


def operation_on(backup_set: BackupSet, operation: str, status: str = RunStatus.QUEUED) -> BackupScheduleRun:
    return BackupScheduleRun.objects.create(
        tenant_id=backup_set.tenant_id,
        schedule=backup_set.run.schedule,
        trigger=Trigger.MANUAL,
        operation=operation,
        subject_set=backup_set,
        status=status,
        created_at=backup_set.created_at + timedelta(days=1),
    )


@pytest.mark.parametrize("operation", [Operation.RESTORE, Operation.VERIFY])
def test_a_set_a_queued_or_running_restore_or_verify_reads_is_kept_until_it_is_done(schedule, operation) -> None:
    set_policy(schedule, keep_last=1)
    stored_set(schedule, berlin("2026-11-26T02:30"))
    old = stored_set(schedule, berlin("2026-11-20T02:30"))
    run = operation_on(old, operation)
    assert apply_retention(schedule) == []
    BackupScheduleRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    assert apply_retention(schedule) == []
    assert file_of(old).exists()
    BackupScheduleRun.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED)
    assert [s.pk for s in apply_retention(schedule)] == [old.pk]


def test_a_restore_requested_while_retention_runs_keeps_its_set(schedule, monkeypatch) -> None:
    set_policy(schedule, keep_last=1)
    stored_set(schedule, berlin("2026-11-26T02:30"))
    old = stored_set(schedule, berlin("2026-11-20T02:30"))
    real_decide = retention._decide

    def restore_meanwhile(schedule, live):
        decision = real_decide(schedule, live)
        operation_on(old, Operation.RESTORE)  # requested right after retention decided
        return decision

    monkeypatch.setattr(retention, "_decide", restore_meanwhile)
    assert apply_retention(schedule) == []
    old.refresh_from_db()
    assert old.deleted_at is None and file_of(old).exists()


def test_a_set_is_marked_deleted_and_audited_before_its_files_are_removed(schedule, monkeypatch) -> None:
    set_policy(schedule, keep_last=1)
    stored_set(schedule, berlin("2026-11-26T02:30"))
    old = stored_set(schedule, berlin("2026-11-20T02:30"))
    seen = []
    real_delete = storage.delete

    def checking_delete(key: str) -> None:
        row = BackupSet.objects.get(items__storage_key=key)
        seen.append((row.deleted_at is not None, AuditLog.objects.filter(target_code=row.code).exists()))
        real_delete(key)

    monkeypatch.setattr(storage, "delete", checking_delete)
    apply_retention(schedule)
    assert seen == [(True, True)]
    assert not file_of(old).exists()


def test_a_file_that_cannot_be_removed_does_not_stop_the_other_prunes(schedule, monkeypatch, caplog) -> None:
    set_policy(schedule, keep_last=1)
    stored_set(schedule, berlin("2026-11-26T02:30"))
    stuck = stored_set(schedule, berlin("2026-11-25T02:30"))
    other = stored_set(schedule, berlin("2026-11-24T02:30"))
    stuck_key = stuck.items.get().storage_key
    real_delete = storage.delete

    def failing_delete(key: str) -> None:
        if key == stuck_key:
            raise PermissionError(13, "Permission denied")
        real_delete(key)

    monkeypatch.setattr(storage, "delete", failing_delete)
    pruned = apply_retention(schedule)
    assert [s.pk for s in pruned] == [stuck.pk, other.pk]
    assert not file_of(other).exists()
    stuck.refresh_from_db()
    assert stuck.deleted_at is not None  # marked: the list no longer offers a set whose file may be gone
    assert "could not remove file" in caplog.text and "Permission denied" in caplog.text


def test_an_old_partial_set_is_pruned_and_a_recent_one_kept(schedule) -> None:
    set_policy(schedule, keep_last=2)
    newest_partial = stored_set(schedule, berlin("2026-11-26T02:30"), status=SetStatus.PARTIAL)
    complete_25 = stored_set(schedule, berlin("2026-11-25T02:30"))
    partial_24 = stored_set(schedule, berlin("2026-11-24T02:30"), status=SetStatus.PARTIAL)
    complete_23 = stored_set(schedule, berlin("2026-11-23T02:30"))
    partial_22 = stored_set(schedule, berlin("2026-11-22T02:30"), status=SetStatus.PARTIAL)
    assert [s.pk for s in apply_retention(schedule)] == [partial_22.pk]
    assert live_ids(schedule) == [newest_partial.pk, complete_25.pk, partial_24.pk, complete_23.pk]
    assert not file_of(partial_22).exists()


def test_a_set_that_failed_verification_does_not_take_the_place_of_a_good_one(schedule) -> None:
    set_policy(schedule, keep_last=1)
    broken = stored_set(schedule, berlin("2026-11-26T02:30"), verify_status=VerifyStatus.FAILED)
    good = stored_set(schedule, berlin("2026-11-25T02:30"), verify_status=VerifyStatus.OK)
    older = stored_set(schedule, berlin("2026-11-24T02:30"))
    assert [s.pk for s in apply_retention(schedule)] == [older.pk]
    assert live_ids(schedule) == [broken.pk, good.pk]


def test_a_second_pass_prunes_nothing_more(schedule) -> None:
    set_policy(schedule, keep_last=2, keep_daily=3, keep_monthly=2)
    for day in range(1, 29, 3):
        stored_set(schedule, berlin(f"2026-10-{day:02d}T02:30"))
        stored_set(schedule, berlin(f"2026-11-{day:02d}T02:30"))
    # Kept: 28 Nov (last, daily, monthly), 25 Nov (last, daily), 22 Nov (daily), 28 Oct (monthly).
    assert len(apply_retention(schedule)) == 20 - 4
    assert apply_retention(schedule) == []
    kept = BackupSet.objects.filter(run__schedule=schedule, deleted_at__isnull=True)
    assert [s.created_at for s in kept] == [berlin(f"2026-{d}T02:30") for d in ("11-28", "11-25", "11-22", "10-28")]


def test_a_successful_run_applies_the_grandfather_father_son_policy(schedule) -> None:
    set_policy(schedule, keep_last=1, keep_daily=3)
    with time_machine.travel(datetime(2026, 11, 26, 11, 0, tzinfo=UTC), tick=True):
        two_days_late = stored_set(schedule, berlin("2026-11-24T20:00"))
        two_days_early = stored_set(schedule, berlin("2026-11-24T02:30"))
        yesterday = stored_set(schedule, berlin("2026-11-25T02:30"))
        last_month = stored_set(schedule, berlin("2026-10-26T02:30"))
        run = run_now(schedule, actor=None)
        assert execute_run(str(run.code)) == "succeeded"
    new = BackupSet.objects.get(run=run)
    assert live_ids(schedule) == [new.pk, yesterday.pk, two_days_late.pk]
    for gone in (two_days_early, last_month):
        assert not file_of(gone).exists()
    assert "removed 2 older set(s)" in BackupScheduleRun.objects.get(pk=run.pk).log


def test_the_preview_shows_what_a_typed_policy_would_delete_without_deleting_anything(schedule) -> None:
    newest = stored_set(schedule, berlin("2026-11-26T02:30"))
    sunday = stored_set(schedule, berlin("2026-11-22T02:30"))
    saturday = stored_set(schedule, berlin("2026-11-21T02:30"))
    before = AuditLog.objects.count()
    typed = BackupSchedule.objects.get(pk=schedule.pk)
    typed.keep_last, typed.keep_weekly = 1, 2  # what the form holds, not saved
    preview = preview_retention(typed, now=berlin("2026-11-26T12:00"))
    assert [(e.backup_set.pk, e.reasons) for e in preview.kept] == [
        (newest.pk, ("last 1", "weekly 2026-W48")),
        (sunday.pk, ("weekly 2026-W47",)),
    ]
    assert [(e.backup_set.pk, e.reasons) for e in preview.deleted] == [(saturday.pk, (NOT_KEPT,))]
    assert preview.policy.describe() == "last 1, weekly 2" and preview.timezone == "Europe/Berlin"
    assert preview.kept[0].age == timedelta(hours=9, minutes=30)
    # Nothing changed: the saved policy (keep last 3) still keeps all three.
    schedule.refresh_from_db()
    assert (schedule.keep_last, schedule.keep_weekly) == (3, 0)
    assert len(live_ids(schedule)) == 3 and file_of(saturday).exists()
    assert AuditLog.objects.count() == before


def test_the_preview_uses_the_typed_time_zone(schedule) -> None:
    late = stored_set(schedule, berlin("2026-11-26T00:30"))  # 25 November, 18:30 in New York
    early = stored_set(schedule, berlin("2026-11-25T12:00"))
    typed = BackupSchedule.objects.get(pk=schedule.pk)
    typed.keep_last, typed.keep_daily = 1, 2
    in_berlin = preview_retention(typed)
    assert [(e.backup_set.pk, e.reasons) for e in in_berlin.kept] == [
        (late.pk, ("last 1", "daily 2026-11-26")),
        (early.pk, ("daily 2026-11-25",)),
    ]
    typed.timezone = "America/New_York"
    in_new_york = preview_retention(typed)
    assert [(e.backup_set.pk, e.reasons) for e in in_new_york.kept] == [(late.pk, ("last 1", "daily 2026-11-25"))]
    assert [e.backup_set.pk for e in in_new_york.deleted] == [early.pk]


def test_the_preview_of_a_new_schedule_is_empty(tenant) -> None:
    preview = preview_retention(BackupSchedule(tenant=tenant, name="New", keep_last=2, keep_daily=7))
    assert preview.kept == [] and preview.deleted == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("keep_last", 0, "keep_last must be at least 1"), ("timezone", "Mars/Base", "Unknown time zone")],
)
def test_the_preview_refuses_a_policy_that_is_not_one(schedule, field, value, message) -> None:
    stored_set(schedule, berlin("2026-11-26T02:30"))
    setattr(schedule, field, value)
    with pytest.raises(ValueError, match=message):
        preview_retention(schedule)


def test_the_preview_leaves_out_sets_after_now(schedule) -> None:
    earlier = stored_set(schedule, berlin("2026-11-25T02:30"))
    stored_set(schedule, berlin("2026-11-26T02:30"))
    preview = preview_retention(schedule, now=berlin("2026-11-25T12:00"))
    assert [e.backup_set.pk for e in preview.kept] == [earlier.pk] and preview.deleted == []


def test_the_preview_shows_a_set_in_use_as_kept(schedule) -> None:
    set_policy(schedule, keep_last=1)
    stored_set(schedule, berlin("2026-11-26T02:30"))
    old = stored_set(schedule, berlin("2026-11-20T02:30"))
    operation_on(old, Operation.RESTORE, RunStatus.RUNNING)
    preview = preview_retention(schedule)
    assert [(e.backup_set.pk, e.reasons) for e in preview.kept][1] == (old.pk, (IN_USE,))
    assert preview.deleted == []


def test_pinning_and_unpinning_are_audited_with_the_actor(schedule, mia) -> None:
    backup_set = stored_set(schedule, berlin("2026-11-26T02:30"))
    assert set_pinned(backup_set, True, actor=mia) is True
    assert backup_set.pinned and BackupSet.objects.get(pk=backup_set.pk).pinned
    assert set_pinned(backup_set, False, actor=mia) is True
    assert not BackupSet.objects.get(pk=backup_set.pk).pinned
    entries = list(AuditLog.objects.filter(target_code=backup_set.code).order_by("id"))
    assert [(e.action, e.actor) for e in entries] == [(AuditAction.SET_PINNED, mia), (AuditAction.SET_UNPINNED, mia)]
    assert entries[0].details == {"created_at": backup_set.created_at.isoformat(), "schedule": str(schedule.code)}


def test_pinning_a_pinned_set_changes_nothing_and_audits_nothing(schedule, mia) -> None:
    backup_set = stored_set(schedule, berlin("2026-11-26T02:30"), pinned=True)
    stale = BackupSet.objects.get(pk=backup_set.pk)
    stale.pinned = False  # a copy loaded before someone else pinned it
    assert set_pinned(stale, True, actor=mia) is False
    assert stale.pinned is True
    assert not AuditLog.objects.filter(target_code=backup_set.code).exists()


def test_a_deleted_set_cannot_be_pinned(schedule, mia) -> None:
    set_policy(schedule, keep_last=1)
    old = stored_set(schedule, berlin("2026-11-20T02:30"))
    stored_set(schedule, berlin("2026-11-26T02:30"))
    apply_retention(schedule)
    with pytest.raises(PinRefused, match="already been deleted"):
        set_pinned(old, True, actor=mia)
    assert not BackupSet.objects.get(pk=old.pk).pinned
    assert not AuditLog.objects.filter(action=AuditAction.SET_PINNED).exists()


def test_a_pin_on_a_set_of_a_deleted_schedule_is_audited_without_it(schedule, mia) -> None:
    backup_set = stored_set(schedule, berlin("2026-11-26T02:30"))
    BackupScheduleRun.objects.filter(backup_set=backup_set).update(backup_set=None)
    backup_set.refresh_from_db()
    assert set_pinned(backup_set, True, actor=mia) is True
    entry = AuditLog.objects.get(action=AuditAction.SET_PINNED)
    assert entry.details == {"created_at": backup_set.created_at.isoformat()}
