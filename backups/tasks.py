"""The task the cluster executes for each run. Its only argument is the run's code."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from django.utils import timezone

from backups import retention, storage
from backups.engines.base import DumpContext
from backups.engines.registry import engine_for
from backups.errors import BackupError, ErrorCode
from backups.models import BackupItem, BackupSet
from scheduling.heartbeat import heartbeat
from scheduling.models import BackupScheduleRun, RunStatus
from scheduling.runs import claim, finish
from tenants.audit import record
from tenants.models import AuditAction

logger = logging.getLogger(__name__)


class RunLog:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, message: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        self.lines.append(f"{stamp} {message}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def storage_key(run: BackupScheduleRun, started: datetime, index: int = 0, suffix: str = ".sqlite3.zst") -> str:
    stamp = started.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{run.tenant.code}/{run.schedule.code}/{stamp}-{run.code}-{index}{suffix}"


def execute_run(run_code: str) -> str:
    # django-q2's worker closes stale connections before each task.
    started = timezone.now()
    if not claim(run_code, started):
        # A second delivery of the same task, or a run canceled meanwhile.
        logger.info("run %s was not queued any more; nothing to do", run_code)
        return "not claimed"
    run = BackupScheduleRun.objects.select_related("schedule", "tenant").get(code=run_code)
    schedule = run.schedule
    record(run.tenant_id, AuditAction.RUN_STARTED, run, schedule=str(schedule.code), trigger=run.trigger)
    log = RunLog()
    log(f"Run {run.code} started ({run.get_trigger_display()}, attempt {run.attempt}).")
    with heartbeat(run_code):  # through retention too: all of it is the run's work
        status, error_code, message = _work(run, started, log)
    if not finish(run, status, log.text(), error_code, message):
        logger.error("run %s had been finished by someone else; its result was not recorded", run.code)
        return "lost"
    _audit_finish(run)
    return error_code or "succeeded"


def _work(run: BackupScheduleRun, started: datetime, log: RunLog) -> tuple[str, str, str]:
    """Back up, then apply retention. Returns (status, error code, message)."""
    try:
        _back_up(run, started, log)
    except BackupError as exc:
        log(f"Failed: {exc.code}: {exc.message}")
        return RunStatus.FAILED, exc.code, exc.message
    except Exception:
        logger.exception("run %s failed unexpectedly", run.code)
        log("Failed: an unexpected error; the server log has the details.")
        return RunStatus.FAILED, ErrorCode.UNKNOWN, "An unexpected error stopped the backup."
    try:
        pruned = retention.apply_retention(run.schedule)
    except Exception:  # the new set is safe; a retention hiccup must not fail the run
        logger.exception("retention failed for schedule %s", run.schedule.code)
        log("Retention could not run this time; older sets were kept.")
    else:
        if pruned:
            log(f"Retention (keep last {run.schedule.keep_last}) removed {len(pruned)} older set(s).")
    log("Succeeded.")
    return RunStatus.SUCCEEDED, "", ""


def _back_up(run: BackupScheduleRun, started: datetime, log: RunLog) -> BackupSet:
    sources = list(run.schedule.sources.order_by("name"))
    if not sources:
        raise BackupError(ErrorCode.SOURCE_NOT_FOUND, "This schedule has no source to back up.")
    storage.check_free_space_for(run.schedule)  # fail early, before any dump starts
    stored_files = []
    for index, source in enumerate(sources):
        log(f"Source “{source.name}” ({source.get_kind_display()}).")
        engine = engine_for(source.kind)
        ctx = DumpContext(log=log, started_at=started)
        for target in engine.targets(source, ctx):
            with engine.dump(source, target, ctx) as stream:
                stored = storage.store_stream(storage_key(run, started, index, engine.suffix), stream)
            log(f"Stored {stored.size} bytes (from {stored.source_size}), sha256 {stored.sha256}.")
            stored_files.append((source, stored))
    backup_set = BackupSet.objects.create(
        tenant_id=run.tenant_id,
        schedule=run.schedule,
        run=run,
        size=sum(stored.size for _, stored in stored_files),
        source_size=sum(stored.source_size for _, stored in stored_files),
        created_at=timezone.now(),
    )
    BackupItem.objects.bulk_create(
        BackupItem(
            backup_set=backup_set,
            source=source,
            kind=source.kind,
            label=source.name,
            storage_key=stored.key,
            size=stored.size,
            source_size=stored.source_size,
            sha256=stored.sha256,
            started_at=started,
            finished_at=timezone.now(),
        )
        for source, stored in stored_files
    )
    return backup_set


def _audit_finish(run: BackupScheduleRun) -> None:
    details = {"status": run.status, "schedule": str(run.schedule.code)}
    if run.error_code:
        details["error_code"] = run.error_code
    record(run.tenant_id, AuditAction.RUN_FINISHED, run, **details)
