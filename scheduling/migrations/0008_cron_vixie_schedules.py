"""Schedules saved while croniter read cron expressions, brought to the Vixie rules (docs/scheduling.md).

* An enabled cron schedule's next run moves to the first slot, at or after the stored one, that
  the Vixie rules give: `30 2-2 * * *` ran every hour under croniter, and without this its stored
  next run would still come once at a time nobody wrote. An expression now refused is left as
  it is: the dispatcher records its next slot as skipped, with the reason.
* The zone 'Factory' (always UTC+0) becomes 'UTC', the same instants. 'localtime' becomes the
  zone the migrating machine's /etc/localtime names, when it names one; otherwise it stays and
  the dispatcher says why it cannot compute the schedule.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from django.db import migrations

from lib.slots import Cadence, InvalidCadence, next_slot
from lib.zones import accepted_zone_names

LOCALTIME = Path("/etc/localtime")


def local_zone_name(localtime: Path | None = None) -> str | None:
    """The IANA name /etc/localtime links to (.../zoneinfo/Europe/Berlin), if any."""
    try:
        parts = (localtime or LOCALTIME).resolve(strict=True).parts
    except OSError:
        return None
    if "zoneinfo" not in parts:
        return None
    name = "/".join(parts[len(parts) - parts[::-1].index("zoneinfo") :])
    return name if name in accepted_zone_names() else None


def forwards(apps, schema_editor) -> None:
    schedules = apps.get_model("scheduling", "BackupSchedule").objects
    schedules.filter(timezone="Factory").update(timezone="UTC")
    local = local_zone_name()
    if local is not None:
        schedules.filter(timezone="localtime").update(timezone=local)
    crons = schedules.filter(kind="cron", enabled=True, next_run_at__isnull=False)
    refused = []
    for pk, name, tz, expression, stored in crons.values_list("pk", "name", "timezone", "cron", "next_run_at"):
        try:
            moved = next_slot(Cadence("cron", tz, cron=expression), stored - timedelta(minutes=1))
        except InvalidCadence as exc:
            refused.append(f"  schedule {pk} ({name}): {exc}")
            continue
        if moved is not None and moved != stored:
            schedules.filter(pk=pk).update(next_run_at=moved)
    if refused:  # the operator running migrate sees them before their next slot is skipped
        print(f"\n{len(refused)} enabled cron schedule(s) will be skipped until fixed and saved:", *refused, sep="\n")


class Migration(migrations.Migration):
    dependencies = [
        ("scheduling", "0007_dispatcher_beat"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
