from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from contextlib import suppress
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django_q.cluster import Cluster

from backups.sweep import run_sweeper
from scheduling import shutdown
from scheduling.clock import run_clock
from scheduling.dispatch import dispatcher_disabled_message
from scheduling.endings import temporaries_in_use

PR_SET_CHILD_SUBREAPER = 36
POLL_SECONDS = 0.2


class Command(BaseCommand):
    help = (
        "Start the django-q2 cluster (the workers), the minute dispatcher clock and the sweeps of "
        "temporary backup files (of ended runs each minute, stale ones hourly). SIGTERM or Ctrl-C stops them: "
        "running backups get SHUTDOWN_GRACE_SECONDS to finish, then are interrupted; a second signal "
        "interrupts them at once."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()  # a signal came: stop
        hurry = threading.Event()  # a second one: interrupt the running backups now

        def on_signal(signum: int, frame: Any) -> None:
            (hurry if stop.is_set() else stop).set()

        _become_subreaper()
        shutdown.prepare()
        # The cluster's processes are forked with SIGTERM/SIGINT blocked (see
        # scheduling/shutdown.py): only this process acts on a stop, whoever sent it.
        with shutdown.signals_blocked():
            cluster = Cluster()
            # Cluster() installed handlers that call its stop(), which can wait forever
            # (and has no grace): ours replace them before any signal can be delivered.
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            cluster.start()
        if not settings.DISPATCHER_ENABLED:
            self.stderr.write(dispatcher_disabled_message())
        self.stdout.write("Cluster and dispatcher clock running. Ctrl-C to stop.")
        clock = threading.Thread(target=run_clock, args=(stop,), name="dispatcher-clock", daemon=True)
        clock.start()
        # Storage may be this node's own: it removes the temporary files of runs ended anywhere.
        sweeper_options = {"still_writing": temporaries_in_use}
        threading.Thread(
            target=run_sweeper, args=(stop,), kwargs=sweeper_options, name="storage-sweeper", daemon=True
        ).start()
        died = False
        while not stop.is_set():
            stop.wait(1)
            if not stop.is_set() and not cluster.sentinel.is_alive():
                self.stderr.write("The cluster stopped on its own; stopping the dispatcher clock.")
                died = True
                stop.set()
        clean = self._stop(cluster, hurry)
        clock.join(timeout=5)  # a pass in progress; a daemon thread either way
        if died or not clean:
            # Non-zero, so that a service manager restarting on failure restarts the node.
            sys.stdout.flush()
            if _alive(cluster):  # unkillable (uninterruptible I/O): exiting must not wait on it
                os._exit(1)
            sys.exit(1)

    def _stop(self, cluster: Cluster, hurry: threading.Event) -> bool:
        """Stop the cluster within the grace plus STOP_MARGIN_SECONDS; True if it all
        exited by itself, False if what was left had to be killed."""
        grace = settings.SHUTDOWN_GRACE_SECONDS
        started = time.monotonic()
        shutdown.begin()
        self.stdout.write(f"Stopping: running backups have {grace} s to finish (SHUTDOWN_GRACE_SECONDS).")
        # django-q2's stop event makes the sentinel stop its pusher (no task is taken
        # off the broker any more), wait for the workers to end their current task and
        # exit. Not Cluster.stop(): it waits on the sentinel without a bound. Set in a
        # thread of its own: had the sentinel died inside its wait on that event, set()
        # would wait forever for it to wake.
        if cluster.stop_event is not None:
            threading.Thread(target=cluster.stop_event.set, name="cluster-stop", daemon=True).start()
        if _wait_for(cluster, started + grace, hurry):
            self.stdout.write("Cluster stopped.")
            return True
        shutdown.interrupt()
        self.stdout.write("Interrupting the backups still running (INTERRUPTED).")
        if _wait_for(cluster, time.monotonic() + shutdown.STOP_MARGIN_SECONDS):
            self.stdout.write("Cluster stopped.")
            return True
        left = _living_descendants(cluster)
        self.stderr.write(f"Killing {len(left)} process(es) of the cluster that did not stop in time.")
        shutdown.kill_all(left)
        if cluster.sentinel is not None:
            cluster.sentinel.join(timeout=5)
        return False


def _become_subreaper() -> None:
    """Orphans of the cluster (the workers of a sentinel that died) become this
    process's children, so a stop still finds and waits for or kills them. Linux only."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _living_descendants(cluster: Cluster) -> list[int]:
    sentinel = cluster.sentinel.pid if cluster.sentinel is not None else None
    living = []
    for pid, zombie in shutdown.descendants(os.getpid()):
        if not zombie:
            living.append(pid)
        elif pid != sentinel:  # an orphan that ended (multiprocessing reaps the sentinel itself)
            with suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
    return living


def _alive(cluster: Cluster) -> bool:
    return bool(cluster.sentinel is not None and cluster.sentinel.is_alive() or _living_descendants(cluster))


def _wait_for(cluster: Cluster, until: float, hurry: threading.Event | None = None) -> bool:
    """Wait until every process of the cluster has exited (True) or `until` (False)."""
    while _alive(cluster):
        if time.monotonic() >= until or (hurry is not None and hurry.is_set()):
            return False
        time.sleep(POLL_SECONDS)
    return True
