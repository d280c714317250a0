"""The run points at the set it made (BackupScheduleRun.backup_set), copied from the set's
old `run` column, which backups 0007 then drops: backups knows no run. Verify and restore
runs get their own trigger ("Requested") instead of "Run now"."""

import django.db.models.deletion
from django.db import migrations, models


def copy_set_links(apps, schema_editor):
    BackupSet = apps.get_model("backups", "BackupSet")
    BackupScheduleRun = apps.get_model("scheduling", "BackupScheduleRun")
    for set_id, run_id in BackupSet.objects.values_list("pk", "run_id").iterator():
        BackupScheduleRun.objects.filter(pk=run_id).update(backup_set_id=set_id)


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
