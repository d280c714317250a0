from __future__ import annotations

import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from scheduling.models import BackupScheduleRun, RunStatus
from tenants.models import AuditAction, AuditLog, Membership, Role, Tenant


def run_command(*args: str) -> None:
    call_command("run_now", *args)


def test_run_now_queues_a_run_for_an_operator(schedule, bob, capsys) -> None:
    run_command(str(schedule.code), "--as", "bob")
    run = BackupScheduleRun.objects.get()
    assert f"Queued run {run.code}" in capsys.readouterr().out
    assert run.requested_by == bob
    assert AuditLog.objects.get(action=AuditAction.RUN_NOW).actor == bob


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--as", "charlie"], "that charlie can see"),  # outsider: not found
        (["--as", "rita"], "Operator role"),  # too low a role
        (["--as", "nobody"], "No active user"),
    ],
)
def test_run_now_refuses_with_exit_2(schedule, charlie, rita, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message) as caught:
        run_command(str(schedule.code), *args)
    assert caught.value.returncode == 2
    assert not BackupScheduleRun.objects.exists()


def test_run_now_rejects_a_bad_code_and_an_active_run_with_exit_2(schedule, bob) -> None:
    with pytest.raises(CommandError, match="is not a code") as caught:
        run_command("not-a-uuid", "--as", "bob")
    assert caught.value.returncode == 2
    run_command(str(schedule.code), "--as", "bob")
    with pytest.raises(CommandError, match="already has a run") as caught:
        run_command(str(schedule.code), "--as", "bob")
    assert caught.value.returncode == 2


def test_retry_command_needs_a_failed_run(schedule, bob) -> None:
    run_command(str(schedule.code), "--as", "bob")
    run = BackupScheduleRun.objects.get()
    with pytest.raises(CommandError, match="Only failed"):
        run_command(str(run.code), "--as", "bob", "--retry")
    BackupScheduleRun.objects.filter(pk=run.pk).update(status=RunStatus.FAILED)
    run_command(str(run.code), "--as", "bob", "--retry")
    assert BackupScheduleRun.objects.filter(retry_of=run, attempt=2).exists()
    with pytest.raises(CommandError, match="that bob can see"):
        run_command(str(uuid.uuid4()), "--as", "bob", "--retry")


def test_seed_demo_is_idempotent_and_prints_passwords(db, settings, tmp_path, capsys) -> None:
    settings.VAR_DIR = tmp_path
    call_command("seed_demo")
    first = capsys.readouterr().out
    call_command("seed_demo")
    second = capsys.readouterr().out
    assert first == second and "password:" in first
    acme = Tenant.objects.get(name="Acme")
    roles = dict(Membership.objects.filter(tenant=acme).values_list("user__username", "role"))
    assert roles == {"alice": Role.OWNER, "mia": Role.MANAGER, "bob": Role.OPERATOR, "rita": Role.READONLY}
    assert acme.schedules.count() == 5 and acme.sources.count() == 2
    bundle = acme.schedules.get(name="Shop DB and documents hourly")
    assert sorted(bundle.sources.values_list("kind", flat=True)) == ["directory", "sqlite"]
    assert set(acme.schedules.values_list("kind", flat=True)) == {"cron", "daily", "weekly", "every_n_hours"}
    assert all(s.next_run_at for s in acme.schedules.all())
