"""Schedules saved while croniter read cron expressions, brought to the Vixie rules (docs/scheduling.md).

* An enabled cron schedule's next run moves to the first slot, at or after the stored one, that
  the Vixie rules give: `30 2-2 * * *` ran every hour under croniter, and without this its stored
  next run would still come once at a time nobody wrote. An expression now refused (one that no
  date ever matches under Vixie's day rule included, e.g. `0 0 30 2 */2`, which croniter's OR rule
  ran on February's even weekdays) is left as it is: the dispatcher records its next slot as
  skipped, with the reason. One with no next slot at all loses its next run. An upper-case
  macro (`@DAILY`, which croniter took and cron does not) is written in lower case.
* The zone 'Factory' (always UTC+0) becomes 'UTC', the same instants. 'localtime' becomes the
  zone the migrating machine's /etc/localtime names, when it names one; otherwise it stays and
  the dispatcher says why it cannot compute the schedule.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from django.db import migrations

from lib.cron import MACROS
from lib.slots import Cadence, InvalidCadence, next_slot, validate
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
        macro = " ".join(expression.split()).lower()
        if macro in MACROS and macro != expression:  # croniter took @DAILY for @daily; cron does not
            schedules.filter(pk=pk).update(cron=macro)
            expression = macro
        cadence = Cadence("cron", tz, cron=expression)
        try:
            validate(cadence)  # what the form refuses now: also an expression no date ever matches
            moved = next_slot(cadence, stored - timedelta(minutes=1))
        except InvalidCadence as exc:
            refused.append(f"  schedule {pk} ({name}): {exc}")
            continue
        if moved is None:  # no slot ever again: nothing to run at the stored time either
            refused.append(f"  schedule {pk} ({name}): {expression!r} has no next run; it stays without one")
            schedules.filter(pk=pk).update(next_run_at=None)
        elif moved != stored:
            schedules.filter(pk=pk).update(next_run_at=moved)
    if refused:  # the operator running migrate sees them before their next slot is skipped
        print(f"\n{len(refused)} enabled cron schedule(s) will be skipped until fixed and saved:", *refused, sep="\n")


class Migration(migrations.Migration):
    dependencies = [
        ("scheduling", "0007_dispatcher_beat"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
