"""How a run ends: one path for every ending, whoever sees it end.

The worker ends a run with its result (scheduling.worker); the dispatcher ends a run
whose worker stopped beating, as failed/WORKER_LOST (scheduling.dispatch). Both call
end(), so every ending does the same things, in this order:

1. the compare-and-swap running -> final status, and the schedule's last-run summary
   (lifecycle.finish): of two parties ending the same run, one wins and only it goes on;
2. the audit entry (RUN_FINISHED);
3. the release of the run's source leases, so the next run of those sources starts
   at once instead of waiting for a take-over;
4. the removal of the run's temporary files in its storage folder on this node, once
   the ending commits (every node's sweeper removes those on other nodes:
   temporaries_in_use);
5. an automatic retry if the failure may pass (scheduling.retry), and the notification
   (in the app and by e-mail: scheduling.notifications), which a pending retry holds back.

Each step after the first is kept from undoing the ending: a failure there is logged
(inside a savepoint, so the dispatcher's pass transaction survives it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import transaction
from django.db.models import Q

from backups import sweep
from lib.passes import first_pass_at
from scheduling import leases, retry
from scheduling.lifecycle import finish
from scheduling.models import ACTIVE_STATUSES, BackupScheduleRun, Operation, RunStatus
from scheduling.notifications import notify_run_finished
from tenants.audit import record
from tenants.connections import fresh_connection, retry_on_drop
from tenants.models import AuditAction

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ending:
    status: str
    log: str | None = None  # None keeps the run's log as it is
    error_code: str = ""
    error_message: str = ""


def end(run: BackupScheduleRun, ending: Ending, only_if: Q | None = None) -> bool:
    """End a running run (see the module's docstring). False, and nothing done, if it
    was not running any more or did not match `only_if`. `run` needs its schedule and
    tenant (select_related) for the summary, the audit, the files and the messages."""
    # Both steps are safe to repeat on a new connection when the worker's was dropped during a
    # long dump (inside the dispatcher's pass transaction retry_on_drop repeats nothing). A
    # finish whose answer was lost reads as "not running" on the second try: rare, and the
    # run is then ended all the same.
    if not retry_on_drop(
        lambda: finish(run, ending.status, ending.log, ending.error_code, ending.error_message, only_if),
        f"run {run.code}: finish",
    ):
        return False
    # A repeat after a lost answer would write the entry twice; one missing would be worse.
    retry_on_drop(lambda: _audit(run), f"run {run.code}: audit")
    leases.release_quietly(run)
    if run.operation == Operation.BACKUP:
        folder, marker = storage_folder(run), str(run.code)
        transaction.on_commit(lambda: _remove_temporary_files(folder, marker))
    retrying = run.status == RunStatus.FAILED and _maybe_retry(run)
    _notify(run, retrying)
    return True


def give_up(runs: Iterable[BackupScheduleRun], ending: Ending, only_if: Q) -> int:
    """The dispatcher's batch form: end each of `runs` (running, `only_if` still true of
    it) the same way. Each in a savepoint, so one that fails does not undo the others
    nor the pass. Returns how many it ended."""
    ended = 0
    for run in runs:
        log = (run.log or "") + f"{datetime.now(UTC):%H:%M:%S} {ending.error_code}: {ending.error_message}\n"
        try:
            with transaction.atomic():
                ended += end(run, Ending(ending.status, log, ending.error_code, ending.error_message), only_if)
        except Exception:
            logger.exception("could not end run %s", run.code)
    return ended


def storage_folder(run: BackupScheduleRun) -> str:
    """The storage folder of a run's files (scheduling.worker.storage_key names them)."""
    return f"{run.tenant.code}/{run.schedule.code}"


# The file name part of scheduling.worker.storage_key: <stamp>-<run code>-<index><suffix>.
_RUN_OF_NAME = re.compile(r"^\d{8}T\d{6}Z-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})-\d+")


def temporaries_in_use(keys: list[str]) -> set[str]:
    """For the cluster's sweeper (backups.sweep.sweep_ended_writes): of the keys that
    temporary files were to become, those whose run is still queued or running, and
    those that are no run's (kept for the age sweep). A run that ended, or that was
    deleted, will never store them. One query per sweep."""
    run_of = {key: match.group(1) for key in keys if (match := _RUN_OF_NAME.match(key.rsplit("/", 1)[-1]))}
    active = {
        str(code)
        for code in BackupScheduleRun.objects.filter(
            code__in=set(run_of.values()), status__in=ACTIVE_STATUSES
        ).values_list("code", flat=True)
    }
    return {key for key in keys if key not in run_of or run_of[key] in active}


def _remove_temporary_files(folder: str, marker: str) -> None:
    try:
        sweep.remove_temporary_files(folder, marker)
    except Exception:  # the sweeper removes what is left, within a minute
        logger.exception("could not remove the temporary files of run %s", marker)


def _audit(run: BackupScheduleRun) -> None:
    details = {"status": run.status, "schedule": str(run.schedule.code), "operation": run.operation}
    if run.error_code:
        details["error_code"] = run.error_code
    record(run.tenant_id, AuditAction.RUN_FINISHED, run, **details)


def _maybe_retry(run: BackupScheduleRun) -> bool:
    """Schedule the next attempt if the failure may pass; True if one is pending."""
    try:
        nxt = retry.schedule_retry(run)
    except Exception:  # the failure is recorded; a hiccup here must not hide it (it is notified)
        logger.exception("could not schedule the automatic retry of run %s", run.code)
        return False
    if nxt is None:
        return False
    assert nxt.not_before is not None
    note = (
        f"{datetime.now(UTC):%H:%M:%S} Attempt {nxt.attempt} of {run.schedule.max_attempts} "
        f"will start at {first_pass_at(nxt.not_before):%Y-%m-%d %H:%M} UTC (run {nxt.code}).\n"
    )
    run.log += note
    BackupScheduleRun.objects.filter(pk=run.pk).update(log=run.log)
    return True


def _notify(run: BackupScheduleRun, retrying: bool) -> None:
    # The run's result is recorded; telling people about it must not undo that. A
    # savepoint: in the dispatcher's pass a failed statement would otherwise end it.
    try:
        fresh_connection()  # not retried: a second try could send its e-mails twice
        with transaction.atomic():
            notify_run_finished(run, retrying)
    except Exception:
        logger.exception("run %s: could not notify its tenant's members", run.code)
