"""A Redis server of a test's own, on a spare port, to kill and start again.

The shared Redis (REDIS_URL) is never stopped: a test that takes the broker away runs
`redis-server` itself, with no persistence (a restart loses the list, as a real restart
without AOF does), and stops it by its pid. It skips where the binary is absent, and
fails under CI=true.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from tests.db_servers import _unavailable


def _spare_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = _spare_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=5)

    def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        """SIGKILL, as a crashed or OOM-killed Redis: no goodbye to its clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        _unavailable("redis-server is not installed: the broker fault tests need one of their own")
        raise AssertionError("unreachable")  # _unavailable skips or fails
    server = RedisServer(binary)
    server.start()
    try:
        yield server
    finally:
        server.kill()
