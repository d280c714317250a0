"""Notification, moved from tenants with its rows: the model is taken over as it stands in
tenants_notification (no database change), then its table and indexes get this app's names.
Renaming keeps every row, the primary keys and the foreign keys pointing at them; the content
type moves too, so permissions granted on notifications still apply."""

import django.db.models.deletion
import uuid
from django.conf import settings
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
        ('scheduling', '0011_recovery_pending'),
        ('tenants', '0009_notification_moves_to_scheduling'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Notification',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('code', models.UUIDField(default=uuid.uuid4, editable=False, unique=True)),
                        ('kind', models.CharField(choices=[('run_failed', 'Run failed'), ('run_partial', 'Run partly failed'), ('slot_missed', 'Slot missed'), ('run_requested', 'Run now / Retry requested'), ('restore_finished', 'Restore finished'), ('run_recovered', 'Backups work again')], max_length=32)),
                        ('title', models.CharField(blank=True, max_length=200)),
                        ('message', models.CharField(max_length=500)),
                        ('created_at', models.DateTimeField()),
                        ('read_at', models.DateTimeField(blank=True, null=True)),
                        ('run', models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='scheduling.backupschedulerun')),
                        ('tenant', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='notifications', to='tenants.tenant')),
                        ('user', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='notifications', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'tenants_notification',
                        'ordering': ['-created_at', '-id'],
                        'indexes': [models.Index(fields=['user', 'tenant', '-created_at'], name='tenants_notif_user_time'), models.Index(condition=models.Q(('read_at__isnull', True)), fields=['user', 'tenant'], name='tenants_notif_unread')],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.AlterModelTable(name='notification', table=None),
        migrations.RenameIndex(model_name='notification', new_name='scheduling_notif_user_time', old_name='tenants_notif_user_time'),
        migrations.RenameIndex(model_name='notification', new_name='scheduling_notif_unread', old_name='tenants_notif_unread'),
        migrations.RunPython(
            relabel_content_type("tenants", "notification", "scheduling"),
            relabel_content_type("scheduling", "notification", "tenants"),
        ),
    ]
