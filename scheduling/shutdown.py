"""Stopping a node (`manage.py runcluster`) within its grace period.

What a stop must do: the clock and the sweeper stop at once, no new run starts,
running backups get SHUTDOWN_GRACE_SECONDS to finish, then the ones still going are
interrupted (INTERRUPTED: their temporary file removed, nothing partial stored, their
lease released, an automatic retry scheduled), and the whole cluster has exited within
the grace plus STOP_MARGIN_SECONDS, every time.

How the processes learn of it. django-q2 forks its processes: runcluster (main) ->
sentinel -> workers, pusher and monitor; a worker runs the run's task in its own main
thread and spawns the client tools. A stop reaches them in one of two ways, and both
must give the same result:
* systemd with KillMode=mixed (docs/operations.md) signals the main process only;
* `kill -TERM -PGID`, Ctrl-C in a terminal, or systemd's default KillMode=control-group
  signals every process at once.
So the main process alone decides, and tells the others through `_phase`, a shared
integer created before the cluster forks (every process of the cluster inherits the
mapping; fork is django-q2's start method on Linux). A worker reads it without a lock
on every read of a dump: one aligned int, written by one process. The other processes
of the cluster are started with SIGTERM and SIGINT blocked (runcluster blocks them while
it forks, and a blocked mask is inherited by every child and through exec): a group
signal then neither kills a worker mid-dump nor the sentinel. The sentinel mattered
most: its SIGTERM is reset to the default, and killed while it waited on django-q2's
stop event (a multiprocessing.Event, as it does every half second), it left
Cluster.stop()'s `stop_event.set()` waiting forever for it to wake (multiprocessing's
Condition.notify waits for each sleeper to acknowledge). Measured before: the main
process hung for good in some trials, and every group stop killed the running backup.
The client tools, in their own sessions, inherit the blocked mask too, so under
control-group they are not killed by systemd's SIGTERM either; the watchdog of
backups.engines.process kills them (SIGKILL) at the interrupt, as at a deadline.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from backups.errors import BackupError, ErrorCode

logger = logging.getLogger(__name__)

RUNNING, STOPPING, INTERRUPTING = 0, 1, 2
# After the grace, how long the interrupted runs get to record their end (the dump is
# killed within half a second; then the run's final writes, its retry, its
# notifications: a mail server that does not answer costs EMAIL_TIMEOUT) before what
# is left of the cluster is killed. TimeoutStopSec must be above grace + this.
STOP_MARGIN_SECONDS = 30
SIGNALS = (signal.SIGTERM, signal.SIGINT)

INTERRUPTED_MESSAGE = (
    "The backup was stopped because the worker's server was shutting down or restarting, "
    "and it did not finish within the shutdown grace period. Nothing partial was kept."
)

_phase: ctypes.c_int | None = None


def prepare() -> None:
    """Create the shared phase, before the cluster forks (runcluster only)."""
    global _phase
    _phase = multiprocessing.RawValue(ctypes.c_int, RUNNING)


def _set(phase: int) -> None:
    if _phase is not None:
        _phase.value = max(_phase.value, phase)


def begin() -> None:
    """Stopping: workers start no new run (scheduling.worker hands them back)."""
    _set(STOPPING)


def interrupt() -> None:
    """The grace is over: running backups stop now (INTERRUPTED)."""
    _set(INTERRUPTING)


def stopping() -> bool:
    return _phase is not None and _phase.value >= STOPPING


def interrupted() -> BackupError | None:
    """A backup's stop check (backups.pipeline.BackupJob.should_stop): INTERRUPTED once
    the node's grace period is over. Outside a cluster (a test, a command) never."""
    if _phase is not None and _phase.value >= INTERRUPTING:
        return BackupError(ErrorCode.INTERRUPTED, INTERRUPTED_MESSAGE)
    return None


@contextmanager
def signals_blocked() -> Iterator[None]:
    """SIGTERM and SIGINT blocked in the calling thread meanwhile: processes forked
    inside inherit them blocked (see the module docstring); a signal arriving in
    between waits and is delivered to the caller on leaving."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def descendants(pid: int) -> list[tuple[int, bool]]:
    """Every process below `pid` (Linux: read from /proc), parents before their children,
    each with whether it is a zombie (ended, not yet reaped).

    The client tools are among them (their own session, still a child of their worker)."""
    parents: dict[int, list[tuple[int, bool]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses; it ends at the last ")".
        state, ppid = stat[stat.rindex(b")") + 2 :].split()[:2]
        parents.setdefault(int(ppid), []).append((int(entry), state == b"Z"))
    found: list[tuple[int, bool]] = []
    todo = [pid]
    while todo:
        children = parents.get(todo.pop(0), [])
        found.extend(children)
        todo.extend(child for child, _zombie in children)
    return found


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
