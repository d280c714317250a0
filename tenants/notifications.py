"""Moved to scheduling.notifications. Kept only until the worker and the dispatcher import from
there (merge of issue 11); then this file goes."""

from scheduling.notifications import (  # noqa: F401
    notify_retry_canceled,
    notify_run_finished,
    notify_run_requested,
    notify_slots_missed,
)
