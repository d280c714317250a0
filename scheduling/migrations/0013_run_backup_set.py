"""The run points at the set it made (BackupScheduleRun.backup_set), copied from the set's
old `run` column, which backups 0007 then drops: backups knows no run. Verify and restore
runs get their own trigger ("Requested") instead of "Run now".

The worker task moved from backups.tasks.execute_run to scheduling.worker.execute_run, so a
task still waiting in the broker under the old path fails once it is taken. Queued runs
whose task was pushed forget that push here: the dispatcher's next pass pushes their tasks
again at once (release_due_retries picks queued runs with no task whose not_before is NULL
or has come), and the run is claimed by compare-and-swap, so only one delivery executes it."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone


def copy_set_links(apps, schema_editor):
    """One UPDATE: every run that made a set takes that set's id."""
    BackupSet = apps.get_model("backups", "BackupSet")
    BackupScheduleRun = apps.get_model("scheduling", "BackupScheduleRun")
    made = BackupSet.objects.filter(run_id=OuterRef("pk")).values("pk")[:1]
    BackupScheduleRun.objects.filter(pk__in=BackupSet.objects.values("run_id")).update(backup_set_id=Subquery(made))


def forget_pushed_tasks(apps, schema_editor):
    """Queued runs whose task may wait under the old path are pushed again by the next pass.
    A retry whose not_before is still ahead has no task yet (enqueued_at NULL): untouched."""
    BackupScheduleRun = apps.get_model("scheduling", "BackupScheduleRun")
    due = Q(not_before__isnull=True) | Q(not_before__lte=timezone.now())
    BackupScheduleRun.objects.filter(due, status="queued", enqueued_at__isnull=False).update(enqueued_at=None)


def mark_requested(apps, schema_editor):
    BackupScheduleRun = apps.get_model("scheduling", "BackupScheduleRun")
    BackupScheduleRun.objects.filter(operation__in=["verify", "restore"]).update(trigger="request")


def unmark_requested(apps, schema_editor):
    BackupScheduleRun = apps.get_model("scheduling", "BackupScheduleRun")
    BackupScheduleRun.objects.filter(trigger="request").update(trigger="manual")


class Migration(migrations.Migration):
    dependencies = [
        ("backups", "0006_kind_choices_from_registry"),
        ("scheduling", "0012_notification"),
    ]

    operations = [
        migrations.AddField(
            model_name="backupschedulerun",
            name="backup_set",
            field=models.OneToOneField(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="run",
                to="backups.backupset",
            ),
        ),
        # The reverse copy (run -> set) is backups 0007's, which re-adds the set's columns.
        migrations.RunPython(copy_set_links, migrations.RunPython.noop),
        # Nothing to undo going back: a push forgotten is made again by the next pass.
        migrations.RunPython(forget_pushed_tasks, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="backupschedulerun",
            index=models.Index(
                condition=models.Q(("backup_set__isnull", False)),
                fields=["schedule", "backup_set"],
                name="scheduling_run_set_by_schedule",
            ),
        ),
        migrations.AlterField(
            model_name="backupschedulerun",
            name="trigger",
            field=models.CharField(
                choices=[
                    ("scheduled", "Scheduled"),
                    ("manual", "Run now"),
                    ("retry", "Retry"),
                    ("request", "Requested"),
                ],
                default="scheduled",
                max_length=16,
            ),
        ),
        migrations.RunPython(mark_requested, unmark_requested),
    ]
