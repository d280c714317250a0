"""Database steps of a long job, on a connection that may have been dropped meanwhile.

A backup holds its thread's connection idle for as long as the dump takes (hours, for a
big server). A database restart, a failover, an idle timeout or `pg_terminate_backend`
kills it meanwhile, and Django does not notice by itself: outside a request nothing
calls `close_old_connections`, and even that only closes a connection on which an error
has already occurred (`errors_occurred`). Every later statement of the job would then
fail on the dead connection, and the job's result (its backup set, its run's status)
would be lost although the work was done.

So a long job's database steps go through here:

* `fresh_connection()` before a step that must not be repeated (a notification that
  sends e-mail): one cheap `is_usable()` check, and a dead connection is closed so that
  the step's first statement opens a new one.
* `retry_on_drop(step)` around an idempotent step (an UPDATE by compare-and-swap, a
  DELETE, a whole transaction): the step runs as is (no extra statement while the
  connection is fine), and when it fails because the connection is gone, it runs once
  more on a new one. Any other database error (a lock timeout, a constraint) goes on
  as it came: that is no dropped connection, and a second try would not help.

Neither ever reconnects inside an atomic block: the block's earlier statements died with
the old connection, and going on in a new one would commit half a transaction. Django
itself refuses then; the block fails, and the step is retried whole after it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections

logger = logging.getLogger(__name__)

T = TypeVar("T")

# What the drivers raise when the connection went away under a statement (psycopg:
# OperationalError "terminating connection due to administrator command", or
# InterfaceError "the connection is closed" on the next use; Django wraps both).
DROPPED = (OperationalError, InterfaceError)


def fresh_connection(using: str = DEFAULT_DB_ALIAS) -> bool:
    """Close this thread's connection if it no longer works, so the next statement opens
    a new one. Inside an atomic block it does nothing (see the module docstring).

    Returns True when it closed a dead connection."""
    conn = connections[using]
    if conn.in_atomic_block or conn.connection is None:
        return False
    if conn.is_usable():  # one "SELECT 1" on PostgreSQL; SQLite's file is always there
        return False
    logger.warning("the database connection (%s) was lost; the next statement opens a new one", using)
    conn.close()
    return True


def retry_on_drop(step: Callable[[], T], what: str, using: str = DEFAULT_DB_ALIAS) -> T:
    """Run the idempotent database `step`; if it failed because the connection had been
    dropped, run it once more on a new connection. `what` names the step in the log.

    The step must be safe to repeat: the statement that failed may have been carried out
    by the server before the connection broke (its answer lost on the way)."""
    conn = connections[using]
    before = conn.connection
    try:
        return step()
    except DROPPED:
        if conn.in_atomic_block:
            raise  # the enclosing block fails whole; its caller may retry it
        # The same connection, still answering: a real error of the step (a lock timeout).
        # A connection Django has replaced meanwhile (leaving an atomic block whose
        # rollback failed, it closes the dead one and opens the next) was lost.
        if before is not None and conn.connection is before and conn.is_usable():
            raise
        logger.warning("%s: the database connection was lost; trying once more on a new one", what)
        if conn.connection is before:
            conn.close()
    return step()
