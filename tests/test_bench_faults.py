"""bench/faults.py's own machinery: what decides its verdict, and what it cleans up after.

Not the faults themselves (the bench causes those, for minutes): its spare port, its process
groups, the sockets it reads a worker's connections from, and the summary and exit status it
derives from measured figures."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "faults.py"


@pytest.fixture(scope="module")
def faults() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_faults", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_faults"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_the_spare_port_is_free_to_listen_on(faults: ModuleType) -> None:
    port = faults.spare_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()


def test_stopping_a_node_ends_its_whole_process_group(faults: ModuleType, tmp_path: Path) -> None:
    # A shell whose child ignores SIGINT, as a worker busy in a dump may: stop() must not leave it.
    pid_file = tmp_path / "child.pid"
    script = f"trap '' INT; sleep 300 & echo $! > {pid_file}; wait"
    node = faults.Node(["bash", "-c", script], dict(os.environ), tmp_path / "node.log", "test")
    try:
        assert faults.wait_for(pid_file.exists, 20, 0.05)
        time.sleep(0.2)
        child = int(pid_file.read_text())
        node.stop(signal.SIGINT, timeout=1)
        assert not node.alive()
        assert node not in faults.Node.live
        # The grandchild ends too: its group was killed, not just the process started.
        assert faults.wait_for(lambda: faults._proc_stat(child) is None or _zombie(child), 10, 0.05)
    finally:
        node.kill_group()
        pid_file.unlink(missing_ok=True)


def _zombie(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return text[text.rfind(")") + 2] == "Z"


def test_a_connection_shows_among_the_local_ports_of_its_process(faults: ModuleType) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()) as client:
            assert client.getsockname()[1] in faults.local_ports(os.getpid())


def test_a_figure_over_its_bound_is_missed_and_fails_the_run(faults: ModuleType) -> None:
    figures = [
        faults.Figure("embedded", "worker-kill", "final", 95.0, 120, unit="s"),
        faults.Figure("production", "worker-kill", "final", 342.0, 120, unit="s"),
        faults.Figure("production", "worker-kill", "notified", 1, 1, at_least=True),
    ]
    line = faults.summary_line(figures)
    assert "worker-kill final 342s/120s MISSED (production)" in line
    assert "notified 1/>=1" in line
    assert line.endswith("=> 1 figures missed their bound")
    assert faults.exit_status(figures, []) == 1
    assert faults.exit_status(figures[:1] + figures[2:], []) == 0


def test_a_timed_out_figure_is_the_worst_and_shows_what_was_waited(faults: ModuleType) -> None:
    figures = [
        faults.Figure("embedded", "lost-task", "executed", 61.0, 120, unit="s", limit=300),
        faults.Figure("production", "lost-task", "executed", None, 120, unit="s", limit=300),
    ]
    assert "lost-task executed >300s/120s MISSED (production)" in faults.summary_line(figures)


def test_too_few_notifications_is_the_worst_of_an_at_least_figure(faults: ModuleType) -> None:
    figures = [
        faults.Figure("embedded", "worker-kill", "notified", 1, 1, at_least=True),
        faults.Figure("production", "worker-kill", "notified", 0, 1, at_least=True),
    ]
    assert "notified 0/>=1 MISSED (production)" in faults.summary_line(figures)
    assert faults.exit_status(figures, []) == 1


def test_not_applicable_yields_to_a_measurement_and_stands_alone_otherwise(faults: ModuleType) -> None:
    na = faults.Figure("embedded", "db-drop", "final", None, None, note="SQLite")
    measured = faults.Figure("production", "db-drop", "final", 30.0, 120, unit="s")
    assert "db-drop final 30s/120s" in faults.summary_line([na, measured])
    assert "db-drop n/a on embedded" in faults.summary_line([na])
    # Not applicable is no miss; nothing measured at all, or a fault that could not be caused, is no pass.
    assert faults.exit_status([na], []) == 0
    assert faults.exit_status([], []) == 1
    assert faults.exit_status([measured], ["embedded sigterm: the run did not get going"]) == 1


def test_the_parent_reads_a_profiles_figures_from_its_last_line(faults: ModuleType) -> None:
    figure = faults.Figure("embedded", "sigterm", "exit", 7.5, 15, unit="s")
    output = "-- sigterm\n" + faults.FIGURES_MARK + '{"figures": [' + _json(faults, figure) + '], "failures": []}\n'
    got, failures = faults.read_figures(output, "embedded")
    assert got == [figure] and failures == []
    nothing = faults.read_figures("crashed\n", "embedded")
    assert nothing == ([], ["embedded: the profile's process ended without figures"])


def _json(faults: ModuleType, figure: object) -> str:
    import json
    from dataclasses import asdict

    return json.dumps(asdict(figure))  # type: ignore[call-overload]
