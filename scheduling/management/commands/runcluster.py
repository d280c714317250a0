from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django_q.cluster import Cluster

from backups.sweep import run_sweeper
from scheduling.clock import run_clock
from scheduling.dispatch import dispatcher_disabled_message
from scheduling.endings import temporaries_in_use


class Command(BaseCommand):
    help = (
        "Start the django-q2 cluster (the workers), the minute dispatcher clock and the sweeps of "
        "temporary backup files (of ended runs each minute, stale ones hourly); Ctrl-C stops them."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()
        cluster = Cluster()
        cluster.start()

        def shut_down(signum: int, frame: Any) -> None:
            stop.set()

        # Cluster() installed its own handlers; ours stops the clock, then the cluster.
        signal.signal(signal.SIGTERM, shut_down)
        signal.signal(signal.SIGINT, shut_down)
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
        while not stop.is_set():
            stop.wait(1)
            if cluster.sentinel is not None and not cluster.sentinel.is_alive():
                self.stderr.write("The cluster stopped; stopping the dispatcher clock.")
                stop.set()
        clock.join(timeout=30)
        cluster.stop()
