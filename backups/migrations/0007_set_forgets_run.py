"""A backup set no longer points at its run or schedule: the run points at the set
(scheduling 0013 copied the links). Reversible: going back copies them onto the set again,
unless a set has no run any more (its run was deleted), which the old schema cannot hold."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.migrations.exceptions import IrreversibleError


def copy_links_back(apps, schema_editor):
    BackupSet = apps.get_model("backups", "BackupSet")
    BackupScheduleRun = apps.get_model("scheduling", "BackupScheduleRun")
    linked = BackupScheduleRun.objects.filter(backup_set__isnull=False)
    for run_id, schedule_id, set_id in linked.values_list("pk", "schedule_id", "backup_set_id").iterator():
        BackupSet.objects.filter(pk=set_id).update(run_id=run_id, schedule_id=schedule_id)


def refuse_sets_without_run(apps, schema_editor):
    """Going back, before any column changes: the old schema needs a run for every set."""
    BackupSet = apps.get_model("backups", "BackupSet")
    BackupScheduleRun = apps.get_model("scheduling", "BackupScheduleRun")
    linked = BackupScheduleRun.objects.filter(backup_set_id__isnull=False).values("backup_set_id")
    orphans = BackupSet.objects.exclude(pk__in=linked).count()
    if orphans:
        raise IrreversibleError(
            f"Cannot migrate backups back before 0007_set_forgets_run: {orphans} backup set(s) have no run "
            "(their run was deleted), and the old schema requires every set to have one. Delete those sets "
            "first (BackupSet.objects.filter(run__isnull=True), with their files), then migrate back again."
        )


class Migration(migrations.Migration):
    dependencies = [
        ("backups", "0006_kind_choices_from_registry"),
        ("scheduling", "0013_run_backup_set"),
    ]

    operations = [
        # Nullable first, so that going back can re-add the column before filling it.
        migrations.AlterField(
            model_name="backupset",
            name="run",
            field=models.OneToOneField(
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="backup_set",
                to="scheduling.backupschedulerun",
            ),
        ),
        migrations.RunPython(migrations.RunPython.noop, copy_links_back),
        migrations.RemoveIndex(model_name="backupset", name="backups_set_live_by_schedule"),
        migrations.RemoveField(model_name="backupset", name="schedule"),
        migrations.RemoveField(model_name="backupset", name="run"),
        # Last, so that going back checks first.
        migrations.RunPython(migrations.RunPython.noop, refuse_sets_without_run),
    ]
