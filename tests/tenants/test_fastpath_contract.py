"""The contract of the dispatcher's fast path (tenants/fastpath/__init__.py):
what it copies from django-q2 and from the databases still matches the originals.

Run first after an upgrade of django-q2, Django or a database, on both profiles
(SQLite with the ORM broker, PostgreSQL with Redis). A failure here names the
assumption that broke; the checklist in tenants/fastpath/__init__.py says where
to look."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.signing import TimestampSigner
from django_q.brokers import Broker
from django_q.conf import Conf
from django_q.signing import PickleSerializer, SignedPackage
from django_q.tasks import async_task

from scheduling.models import BackupSchedule, BackupScheduleRun, RunStatus, Trigger
from scheduling.queue import EXECUTE_RUN, enqueue_runs
from tenants.fastpath.sql_writes import insert_rows, update_rows
from tenants.fastpath.task_packages import (
    TASK_NAME,
    batch_signer,
    dashed_code,
    package_run_code,
    scan_queue,
    signed_packages,
    task_package,
)
from tests.helpers import queued_tasks

NOW = datetime(2026, 11, 24, 1, 30, 0, 123456, tzinfo=UTC)

# ---------------------------------------------------------------- django-q2 packages


def test_batch_signed_packages_are_what_django_q2_itself_would_sign(settings) -> None:
    batch = batch_signer()
    plain = TimestampSigner(key=Conf.SECRET_KEY, salt=Conf.PREFIX)
    value = "payload-to-sign"
    assert batch.sign(value).rsplit(":", 1)[1] == plain.signature(f"{value}:{batch.timestamp()}")
    package = batch.sign_object({"a": 1}, serializer=PickleSerializer)
    assert SignedPackage.loads(package) == {"a": 1}


class _Recorder(Broker):
    """A broker that keeps what async_task pushes."""

    def __init__(self) -> None:
        super().__init__(list_key="contract")
        self.pushed: list[str] = []

    def enqueue(self, task: str) -> str:
        self.pushed.append(task)
        return "1"


def _async_task_dict(run_code: str) -> dict[str, Any]:
    broker = _Recorder()
    async_task(EXECUTE_RUN, run_code, task_name=TASK_NAME, ack_failure=True, broker=broker)
    (package,) = broker.pushed
    return SignedPackage.loads(package)


def test_our_packages_hold_the_task_async_task_would_push() -> None:
    code = uuid.uuid4()
    theirs = _async_task_dict(str(code))
    (package,) = signed_packages(EXECUTE_RUN, [code.hex], NOW)
    ours = SignedPackage.loads(package)
    assert set(ours) == set(theirs), "async_task builds other keys: re-check _task"
    assert {k: v for k, v in ours.items() if k not in ("id", "started")} == {
        k: v for k, v in theirs.items() if k not in ("id", "started")
    }
    assert ours["started"] == NOW and len(ours["id"]) == len(theirs["id"]) == 32


def test_the_reused_pickle_gives_the_package_a_fresh_pickle_would() -> None:
    code = uuid.uuid4()
    fast, slow = (
        SignedPackage.loads(signed_packages(EXECUTE_RUN, [code], NOW)[0]),
        SignedPackage.loads(task_package(EXECUTE_RUN, code, NOW)),
    )
    assert {**fast, "id": ""} == {**slow, "id": ""}
    assert fast["args"] == (str(code),)
    first, second = (SignedPackage.loads(p) for p in signed_packages(EXECUTE_RUN, [code, code], NOW))
    assert first["id"] != second["id"]  # every task its own id


def test_packages_compressed_by_the_setting_still_load(monkeypatch) -> None:
    monkeypatch.setattr(Conf, "COMPRESSED", True)
    code = uuid.uuid4()
    (package,) = signed_packages(EXECUTE_RUN, [code], NOW)
    assert SignedPackage.loads(package)["args"] == (str(code),)


@pytest.mark.parametrize("form", [lambda c: c, str, lambda c: c.hex, lambda c: c.hex.upper()])
def test_a_code_in_any_form_becomes_the_dashed_form(form) -> None:
    code = uuid.uuid4()
    assert dashed_code(form(code)) == str(code)


def test_the_broker_hands_our_tasks_to_a_worker(db, django_capture_on_commit_callbacks) -> None:
    """ORM: rows of its table; Redis: entries of its list; either way django-q2's own
    dequeue finds them and they load."""
    codes = [uuid.uuid4() for _ in range(3)]
    with django_capture_on_commit_callbacks(execute=True):
        enqueue_runs(codes)
    tasks = queued_tasks()
    assert sorted(task["args"] for task in tasks) == sorted((str(code),) for code in codes)
    assert {task["func"] for task in tasks} == {EXECUTE_RUN}


@pytest.mark.parametrize("compressed", [False, True])
def test_the_run_code_is_read_from_a_package_async_task_built(monkeypatch, compressed: bool) -> None:
    """The look for lost tasks reads packages without unpickling them: the signed format
    of core_signing ("[.]b64:ts:sig") and the run code as a string in the pickle."""
    monkeypatch.setattr(Conf, "COMPRESSED", compressed)
    code = str(uuid.uuid4())
    broker = _Recorder()
    async_task(EXECUTE_RUN, code, task_name=TASK_NAME, ack_failure=True, broker=broker)
    async_task("backups.connection.other_task", str(uuid.uuid4()), broker=broker)
    ours, other = broker.pushed
    assert package_run_code(ours, EXECUTE_RUN) == code
    assert package_run_code(ours.encode(), EXECUTE_RUN) == code  # as Redis returns it
    assert package_run_code(signed_packages(EXECUTE_RUN, [code], NOW)[0], EXECUTE_RUN) == code
    assert package_run_code(other, EXECUTE_RUN) is None  # not a run's task


@pytest.mark.parametrize("junk", ["", "no colon", "!!!:1:2", ".eJzz:1:2", b"\xff\xfe:1"])
def test_a_package_that_is_not_ours_names_no_run(junk: str | bytes) -> None:
    assert package_run_code(junk, EXECUTE_RUN) is None


def test_the_queue_scan_sees_waiting_and_taken_tasks(db, django_capture_on_commit_callbacks) -> None:
    """Redis: a task a cluster took is gone from the list. ORM: its row stays, locked."""
    from django_q.brokers import get_broker

    waiting, taken = str(uuid.uuid4()), str(uuid.uuid4())
    with django_capture_on_commit_callbacks(execute=True):
        enqueue_runs([taken, waiting])
    broker = get_broker()
    assert broker.dequeue()  # the first, `taken`
    scan = scan_queue(broker, EXECUTE_RUN, limit=10)
    assert scan.available == {waiting} and scan.complete
    if Conf.ORM:
        assert set(scan.taken) == {taken}
        assert not scan_queue(broker, EXECUTE_RUN, limit=1).complete  # two rows, one read
    else:
        assert scan.taken == {}
        assert scan_queue(broker, EXECUTE_RUN, limit=1).complete  # one left in the list


# ---------------------------------------------------------------- set-based SQL writes


CONSTANTS = {"trigger": Trigger.SCHEDULED, "attempt": 1, "error_code": "", "created_at": NOW, "log": ""}


def _run_row(schedule: BackupSchedule, slot: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "code": uuid.uuid4().hex,
        "tenant": schedule.tenant_id,
        "schedule": schedule.pk,
        "slot": slot,
        "status": RunStatus.SKIPPED,
        "missed_count": 3,
        "error_message": "why – with “quotes” and ü",
        **extra,
    }


def test_inserted_rows_read_back_as_the_orm_wrote_them(schedule) -> None:
    rows = [_run_row(schedule, NOW + timedelta(minutes=i), restore_target={"path": f"/x/{i}", "n": i}) for i in (0, 1)]
    constants = {**CONSTANTS, "enqueued_at": None}
    returned = insert_rows(BackupScheduleRun, rows, returning=["code", "created_at", "slot"], constants=constants)
    assert sorted(returned) == sorted((uuid.UUID(r["code"]), NOW, r["slot"]) for r in rows)
    for row in rows:
        run = BackupScheduleRun.objects.get(code=row["code"])
        assert (run.tenant_id, run.schedule_id, run.slot, run.status) == (
            schedule.tenant_id,
            schedule.pk,
            row["slot"],
            RunStatus.SKIPPED,
        )
        assert (run.missed_count, run.error_message, run.restore_target) == (
            3,
            row["error_message"],
            row["restore_target"],
        )
        assert (run.trigger, run.attempt, run.created_at, run.enqueued_at) == ("scheduled", 1, NOW, None)
        assert BackupScheduleRun.objects.filter(created_at=NOW, slot=row["slot"], code=uuid.UUID(row["code"])).exists()


def test_rows_that_break_a_unique_constraint_are_skipped_and_not_returned(schedule) -> None:
    first = _run_row(schedule, NOW)
    constants = CONSTANTS
    assert len(insert_rows(BackupScheduleRun, [first], returning=["code"], constants=constants)) == 1
    again = _run_row(schedule, NOW)  # same slot: scheduling_run_one_per_slot
    other = _run_row(schedule, NOW + timedelta(minutes=1))
    returned = insert_rows(BackupScheduleRun, [again, other], returning=["code"], constants=constants, convert=False)
    assert [dashed_code(code.hex if isinstance(code, uuid.UUID) else code) for (code,) in returned] == [
        dashed_code(other["code"])
    ]
    assert BackupScheduleRun.objects.count() == 2


def test_updated_rows_get_each_their_own_values(schedule, source, tenant) -> None:
    from tests.helpers import make_schedule

    other = make_schedule(tenant, source, name="other")
    changes = {schedule.pk: {"next_run_at": NOW, "weekdays": [1, 3]}, other.pk: {"next_run_at": None, "weekdays": []}}
    assert update_rows(BackupSchedule, changes) == 2
    schedule.refresh_from_db()
    other.refresh_from_db()
    assert (schedule.next_run_at, schedule.weekdays) == (NOW, [1, 3])
    assert (other.next_run_at, other.weekdays) == (None, [])
