"""SourceLease moves here from backups (backups 0008 dropped it from its state): the
model over the existing table, then the table takes this app's name. No row is lost."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("backups", "0008_lease_moves_to_scheduling"),
        ("scheduling", "0013_run_backup_set"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="SourceLease",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("acquired_at", models.DateTimeField()),
                        (
                            "run",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="leases",
                                to="scheduling.backupschedulerun",
                            ),
                        ),
                        (
                            "source",
                            models.OneToOneField(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="lease",
                                to="backups.backupsource",
                            ),
                        ),
                    ],
                    options={"db_table": "backups_sourcelease"},
                ),
            ],
            database_operations=[],
        ),
        migrations.AlterModelTable(name="sourcelease", table=None),
    ]
