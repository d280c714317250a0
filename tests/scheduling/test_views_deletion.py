"""Deleting backups by hand: a schedule together with its sets (owner, typing its name) and
one unpinned set (manager). Files go through the storage module, local or S3."""

from __future__ import annotations

import pytest
from django.utils import timezone

from backups import storage
from backups.models import BackupItem, BackupSet
from scheduling.deletion import delete_schedule_with_sets, delete_set
from scheduling.models import BackupSchedule, BackupScheduleRun, Operation, RunStatus
from scheduling.retention import apply_retention
from tenants.models import AuditAction, AuditLog
from tests.backups.test_storage import bucket, moto_endpoint, s3_client, s3_settings  # noqa: F401  (fixtures)
from tests.helpers import stored_exists
from tests.scheduling.test_retention_apply import operation_on
from tests.scheduling.test_retention_apply import stored_set as stored_at

HX = {"HX-Request": "true"}


def stored_set(schedule: BackupSchedule, pinned: bool = False) -> BackupSet:
    """A finished backup with a real file in the configured storage behind its item."""
    return stored_at(schedule, timezone.now(), pinned=pinned)


def key_of(backup_set: BackupSet) -> str:
    return BackupItem.objects.get(backup_set=backup_set).storage_key


def queue_operation(backup_set: BackupSet, operation: str) -> BackupScheduleRun:
    return operation_on(backup_set, operation)


def delete_url(schedule: BackupSchedule) -> str:
    return f"/schedules/{schedule.code}/delete/"


# ------------------------------------------------------------------ a schedule with its sets


def test_an_owner_deletes_a_schedule_with_its_sets_by_typing_its_name(client, alice, schedule) -> None:
    sets = [stored_set(schedule), stored_set(schedule)]
    keys = [key_of(each) for each in sets]
    gone_before = stored_set(schedule)  # retention marked it; its row still holds the run, its file was left
    BackupSet.objects.filter(pk=gone_before.pk).update(deleted_at=timezone.now())
    keys.append(key_of(gone_before))
    client.force_login(alice)
    page = client.get(delete_url(schedule)).text
    assert "and its 2 backup sets" in page and "type the schedule&#x27;s name: Nightly" in page
    response = client.post(delete_url(schedule), {"confirm": "Nightly"})
    assert response.status_code == 302
    assert response.url == f"/t/{schedule.tenant.code}/schedules/"
    assert not BackupSchedule.objects.filter(pk=schedule.pk).exists()
    assert not BackupSet.objects.exists() and not BackupScheduleRun.objects.exists()
    assert not any(stored_exists(key) for key in keys)
    entry = AuditLog.objects.get(action=AuditAction.SCHEDULE_DELETED)
    assert entry.actor == alice and entry.target_code == schedule.code
    assert sorted(entry.details["sets_deleted"]) == sorted(str(each.code) for each in sets)


@pytest.mark.parametrize("typed", ["", "nightly", "Nightl", "Nightly backups"])
def test_a_wrong_name_is_a_form_error_and_deletes_nothing(client, alice, schedule, typed) -> None:
    backup_set = stored_set(schedule)
    client.force_login(alice)
    response = client.post(delete_url(schedule), {"confirm": typed})
    assert response.status_code == 200
    assert "This field is required" in response.text or "type “Nightly” exactly" in response.text
    assert BackupSet.objects.filter(pk=backup_set.pk, deleted_at__isnull=True).exists()
    assert stored_exists(key_of(backup_set))
    assert not AuditLog.objects.filter(action=AuditAction.SCHEDULE_DELETED).exists()


def test_a_schedule_with_a_pinned_set_is_kept_until_it_is_unpinned(client, alice, schedule) -> None:
    pinned = stored_set(schedule, pinned=True)
    stored_set(schedule)
    client.force_login(alice)
    assert "Unpin it on the schedule" in client.get(delete_url(schedule)).text
    response = client.post(delete_url(schedule), {"confirm": "Nightly"})
    assert response.status_code == 200 and "1 pinned backup set" in response.text
    assert BackupSet.objects.filter(deleted_at__isnull=True).count() == 2
    assert stored_exists(key_of(pinned))


@pytest.mark.parametrize("operation", [Operation.VERIFY, Operation.RESTORE])
def test_a_schedule_whose_set_a_verify_or_restore_waits_for_is_kept(client, alice, schedule, operation) -> None:
    backup_set = stored_set(schedule)
    queue_operation(backup_set, operation)
    client.force_login(alice)
    response = client.post(delete_url(schedule), {"confirm": "Nightly"})
    assert response.status_code == 200 and "queued or running" in response.text
    assert stored_exists(key_of(backup_set)) and BackupSchedule.objects.filter(pk=schedule.pk).exists()


def test_a_schedule_whose_backup_is_running_is_kept(client, alice, schedule) -> None:
    backup_set = stored_set(schedule)
    BackupScheduleRun.objects.create(
        tenant=schedule.tenant, schedule=schedule, status=RunStatus.RUNNING, created_at=timezone.now()
    )
    client.force_login(alice)
    response = client.post(delete_url(schedule), {"confirm": "Nightly"})
    assert "queued or running" in response.text
    assert stored_exists(key_of(backup_set))


def test_a_manager_may_not_delete_a_schedule_with_sets(client, mia, schedule) -> None:
    stored_set(schedule)
    client.force_login(mia)
    assert client.post(delete_url(schedule), {"confirm": "Nightly"}).status_code == 403
    assert BackupSchedule.objects.filter(pk=schedule.pk).exists()


def test_deleting_a_schedule_with_sets_checks_ownership(client, charlie, schedule) -> None:
    stored_set(schedule)
    client.force_login(charlie)
    assert client.get(delete_url(schedule)).status_code == 404
    assert client.post(delete_url(schedule), {"confirm": "Nightly"}).status_code == 404
    assert BackupSchedule.objects.filter(pk=schedule.pk).exists()


def test_a_schedule_without_sets_is_still_deleted_by_a_manager_without_typing(client, mia, schedule) -> None:
    client.force_login(mia)
    assert client.post(delete_url(schedule)).status_code == 302
    assert not BackupSchedule.objects.exists()


# ------------------------------------------------------------------ one set


def set_url(backup_set: BackupSet) -> str:
    return f"/sets/{backup_set.code}/delete/"


def test_a_manager_deletes_an_unpinned_set_and_its_file(client, mia, schedule) -> None:
    backup_set, other = stored_set(schedule), stored_set(schedule)
    client.force_login(mia)
    detail = client.get(f"/schedules/{schedule.code}/").text
    assert f'action="{set_url(backup_set)}"' in detail
    response = client.post(set_url(backup_set))
    assert response.status_code == 302
    backup_set.refresh_from_db()
    assert backup_set.deleted_at is not None
    assert not stored_exists(key_of(backup_set)) and stored_exists(key_of(other))
    entry = AuditLog.objects.get(action=AuditAction.SET_DELETED)
    assert (entry.actor, entry.target_code, entry.details["schedule"]) == (mia, backup_set.code, str(schedule.code))
    # Gone from the table, and retention after it does not trip over it.
    assert f'id="set-{backup_set.code}"' not in client.get(f"/schedules/{schedule.code}/").text
    assert apply_retention(schedule) == []


def test_deleting_a_set_with_htmx_removes_its_row(client, mia, schedule) -> None:
    backup_set = stored_set(schedule)
    client.force_login(mia)
    response = client.post(set_url(backup_set), headers=HX)
    assert response.status_code == 200
    assert f'id="set-{backup_set.code}"' not in response.text and "deleted, with its files" in response.text


def test_a_pinned_set_is_never_deleted(client, mia, schedule) -> None:
    backup_set = stored_set(schedule, pinned=True)
    client.force_login(mia)
    assert f'action="{set_url(backup_set)}"' not in client.get(f"/schedules/{schedule.code}/").text
    response = client.post(set_url(backup_set), follow=True)
    assert "pinned: unpin it first" in response.text
    assert BackupSet.objects.filter(pk=backup_set.pk, deleted_at__isnull=True).exists()
    assert stored_exists(key_of(backup_set))
    assert not AuditLog.objects.filter(action=AuditAction.SET_DELETED).exists()


@pytest.mark.parametrize("status", [RunStatus.QUEUED, RunStatus.RUNNING])
@pytest.mark.parametrize("operation", [Operation.VERIFY, Operation.RESTORE])
def test_a_set_a_verify_or_restore_uses_is_kept(client, mia, schedule, operation, status) -> None:
    backup_set = stored_set(schedule)
    run = queue_operation(backup_set, operation)
    BackupScheduleRun.objects.filter(pk=run.pk).update(status=status)
    client.force_login(mia)
    response = client.post(set_url(backup_set), follow=True)
    assert "queued or running; delete it once that has finished" in response.text
    assert stored_exists(key_of(backup_set))


def test_a_set_already_deleted_says_so(client, mia, schedule) -> None:
    backup_set = stored_set(schedule)
    delete_set(backup_set, mia)
    client.force_login(mia)
    response = client.post(set_url(backup_set), follow=True)
    assert "already been deleted" in response.text
    assert AuditLog.objects.filter(action=AuditAction.SET_DELETED).count() == 1


def test_deleting_a_set_requires_manager(client, bob, schedule) -> None:
    backup_set = stored_set(schedule)
    client.force_login(bob)
    assert f'action="{set_url(backup_set)}"' not in client.get(f"/schedules/{schedule.code}/").text
    assert client.post(set_url(backup_set)).status_code == 403
    assert stored_exists(key_of(backup_set))


def test_deleting_a_set_checks_ownership(client, charlie, schedule) -> None:
    backup_set = stored_set(schedule)
    client.force_login(charlie)
    assert client.post(set_url(backup_set)).status_code == 404
    assert stored_exists(key_of(backup_set))


def test_deleting_a_set_rejects_get(client, mia, schedule) -> None:
    backup_set = stored_set(schedule)
    client.force_login(mia)
    assert client.get(set_url(backup_set)).status_code == 405
    assert BackupSet.objects.filter(pk=backup_set.pk, deleted_at__isnull=True).exists()


def test_deleting_a_set_requires_login(client, schedule) -> None:
    backup_set = stored_set(schedule)
    response = client.post(set_url(backup_set))
    assert response.status_code == 302 and response.url.startswith("/accounts/login/")


# ------------------------------------------------------------------ S3


def test_deleting_removes_the_objects_from_an_s3_bucket(request, alice, mia, schedule) -> None:
    request.getfixturevalue("s3_settings")  # a local moto server's bucket as the backups storage
    endpoint, bucket_name = request.getfixturevalue("moto_endpoint"), request.getfixturevalue("bucket")
    one, two = stored_set(schedule), stored_set(schedule)

    def listed() -> set[str]:
        return {o["Key"] for o in s3_client(endpoint).list_objects_v2(Bucket=bucket_name).get("Contents", [])}

    assert listed() == {f"prefix/{key_of(one)}", f"prefix/{key_of(two)}"}
    delete_set(one, mia)
    assert listed() == {f"prefix/{key_of(two)}"}
    assert delete_schedule_with_sets(schedule, alice) == 1
    assert listed() == set()


def test_a_file_that_cannot_be_removed_does_not_stop_the_others(client, alice, schedule, monkeypatch, caplog) -> None:
    stuck, other = stored_set(schedule), stored_set(schedule)
    stuck_key, other_key, real_delete = key_of(stuck), key_of(other), storage.delete

    def failing_delete(key: str) -> None:
        if key == stuck_key:
            raise PermissionError(13, "Permission denied")
        real_delete(key)

    monkeypatch.setattr(storage, "delete", failing_delete)
    client.force_login(alice)
    assert client.post(delete_url(schedule), {"confirm": "Nightly"}).status_code == 302
    assert not BackupSchedule.objects.exists() and not BackupSet.objects.exists()
    # The rows went in one transaction; a file left behind is logged and misleads nobody.
    assert not stored_exists(other_key)
    assert stored_exists(stuck_key) and "could not remove file" in caplog.text
