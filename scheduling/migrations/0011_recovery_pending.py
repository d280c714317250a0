from django.db import migrations, models


def mark_told_failures(apps, schema_editor):
    """Schedules whose last backup failed, with no automatic retry waiting, had that
    failure told (the old rule): their next good backup still says it works again."""
    BackupSchedule = apps.get_model("scheduling", "BackupSchedule")
    BackupScheduleRun = apps.get_model("scheduling", "BackupScheduleRun")
    waiting = BackupScheduleRun.objects.filter(status="queued", trigger="retry", not_before__isnull=False)
    BackupSchedule.objects.filter(last_status__in=["failed", "partial"]).exclude(
        pk__in=waiting.values("schedule_id")
    ).update(recovery_pending=True)


class Migration(migrations.Migration):
    dependencies = [
        ("scheduling", "0010_hardening_names_one_active_per_set"),
    ]

    operations = [
        migrations.AddField(
            model_name="backupschedule",
            name="recovery_pending",
            field=models.BooleanField(db_default=False, default=False),
        ),
        migrations.RunPython(mark_told_failures, migrations.RunPython.noop),
    ]
