"""SourceLease belongs to scheduling (it names a run): only the model state leaves
backups here; its table stays, and scheduling 0014 takes it over with its rows."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("backups", "0007_set_forgets_run"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="SourceLease")],
            database_operations=[],
        ),
    ]
