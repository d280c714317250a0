from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('scheduling', '0015_sets_name_their_series'),
    ]

    operations = [
        migrations.CreateModel(
            name='NodeClock',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('node', models.CharField(max_length=200, unique=True)),
                ('measured_at', models.DateTimeField()),
                ('offset_seconds', models.FloatField()),
                ('round_trip_seconds', models.FloatField()),
            ],
        ),
    ]
