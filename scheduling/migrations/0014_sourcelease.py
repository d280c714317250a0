"""SourceLease moves here from backups (backups 0008 dropped it from its state): the
model over the existing table, then the table takes this app's name. No row is lost; the content type moves too, so
permissions granted on leases still apply."""

import django.db.models.deletion
from django.db import migrations, models, router


def relabel_content_type(app_label, model, new_app_label):
    """Permissions granted on the model follow it: its content type changes app, keeping its
    id. Skipped when contenttypes is not migrated in this plan, and when the new label has its
    own row already (remove_stale_contenttypes then asks what to do, as after RenameModel)."""

    def relabel(apps, schema_editor):
        try:
            ContentType = apps.get_model("contenttypes", "ContentType")
        except LookupError:
            return
        db = schema_editor.connection.alias
        if not router.allow_migrate_model(db, ContentType):
            return
        types = ContentType.objects.using(db)
        if not types.filter(app_label=new_app_label, model=model).exists():
            types.filter(app_label=app_label, model=model).update(app_label=new_app_label)

    return relabel


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
        migrations.RunPython(
            relabel_content_type("backups", "sourcelease", "scheduling"),
            relabel_content_type("scheduling", "sourcelease", "backups"),
        ),
    ]
