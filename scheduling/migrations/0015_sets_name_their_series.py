"""Each existing set's series is its schedule's code (through the run that made it), as
the worker names it for new sets: retention and the schedule page find a schedule's live
sets by it (backups_set_live_by_series)."""

from django.db import migrations
from django.db.models import OuterRef, Subquery


def name_series(apps, schema_editor):
    BackupSet = apps.get_model("backups", "BackupSet")
    Run = apps.get_model("scheduling", "BackupScheduleRun")
    made_by = Run.objects.filter(backup_set_id=OuterRef("pk")).values("schedule__code")[:1]
    BackupSet.objects.filter(series__isnull=True).update(series=Subquery(made_by))


class Migration(migrations.Migration):
    dependencies = [
        ("scheduling", "0014_sourcelease"),
        ("backups", "0009_set_series"),
    ]

    operations = [migrations.RunPython(name_series, migrations.RunPython.noop)]
