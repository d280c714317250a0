"""Notification moves to scheduling (notifications are about runs): this app forgets the
model; its table and rows stay, scheduling 0012_notification takes them over."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0008_audit_actions'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name='Notification')],
            database_operations=[],
        ),
    ]
