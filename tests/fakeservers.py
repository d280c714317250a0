"""Listeners on 127.0.0.1 that record every byte a client sends them, for attacking our
claims about where passwords go and what a connection test shows."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


class Recorder:
    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.received = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return  # closed
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._talk_safely, args=(conn,), daemon=True).start()

    def _talk_safely(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            with suppress(OSError, ValueError, struct.error):
                self.talk(conn)

    def recv(self, conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ValueError("closed")
            data += chunk
        with self._lock:
            self.received += data
        return data

    def talk(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.server.close()


class FakePostgres(Recorder):
    """Speaks PostgreSQL's protocol 3 far enough to ask for the password in clear text
    (AuthenticationCleartextPassword), records it, and refuses the login."""

    def talk(self, conn: socket.socket) -> None:
        while True:
            (length,) = struct.unpack("!i", self.recv(conn, 4))
            body = self.recv(conn, length - 4)
            (code,) = struct.unpack("!i", body[:4])
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                conn.sendall(b"N")  # no TLS here: the client goes on in plain text (or gives up)
                continue
            break
        conn.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
        kind = self.recv(conn, 1)
        (length,) = struct.unpack("!i", self.recv(conn, 4))
        self.recv(conn, length - 4)  # the PasswordMessage ("p"), recorded
        if kind == b"p":
            fields = b'SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user "x"\0\0'
            conn.sendall(b"E" + struct.pack("!i", len(fields) + 4) + fields)


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


class AnsweringPostgres(Recorder):
    """Lets anyone in (AuthenticationOk) and answers every query with one row of `values`:
    what a hostile "server" can put into a connection test's result."""

    def __init__(self, values: list[bytes], parameters: dict[bytes, bytes]) -> None:
        self.values = values
        self.parameters = parameters
        super().__init__()

    def talk(self, conn: socket.socket) -> None:
        while True:
            (length,) = struct.unpack("!i", self.recv(conn, 4))
            body = self.recv(conn, length - 4)
            if struct.unpack("!i", body[:4])[0] in (SSL_REQUEST, GSSENC_REQUEST):
                conn.sendall(b"N")
                continue
            break
        out = _message(b"R", struct.pack("!i", 0))
        for name, value in self.parameters.items():
            out += _message(b"S", name + b"\0" + value + b"\0")
        out += _message(b"K", struct.pack("!ii", 1, 2)) + _message(b"Z", b"I")
        conn.sendall(out)
        while True:
            kind = self.recv(conn, 1)
            (length,) = struct.unpack("!i", self.recv(conn, 4))
            self.recv(conn, length - 4)
            if kind == b"X":
                return
            columns = b"".join(
                f"c{i}".encode() + b"\0" + struct.pack("!ihihih", 0, 0, 25, -1, -1, 0) for i in range(len(self.values))
            )
            row = b"".join(struct.pack("!i", len(v)) + v for v in self.values)
            conn.sendall(
                _message(b"T", struct.pack("!h", len(self.values)) + columns)
                + _message(b"D", struct.pack("!h", len(self.values)) + row)
                + _message(b"C", b"SELECT 1\0")
                + _message(b"Z", b"I")
            )


class Banner(Recorder):
    """Any other service: says something first (an SSH or SMTP greeting), then records."""

    def __init__(self, banner: bytes) -> None:
        self.banner = banner
        super().__init__()

    def talk(self, conn: socket.socket) -> None:
        conn.sendall(self.banner)
        while True:
            self.recv(conn, 1)


def closed_port() -> int:
    """A loopback port nobody listens on (bound once, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def fake_postgres() -> Iterator[FakePostgres]:
    server = FakePostgres()
    try:
        yield server
    finally:
        server.close()


@contextmanager
def answering_postgres(values: list[bytes], parameters: dict[bytes, bytes]) -> Iterator[AnsweringPostgres]:
    server = AnsweringPostgres(values, parameters)
    try:
        yield server
    finally:
        server.close()


@contextmanager
def banner_server(banner: bytes) -> Iterator[Banner]:
    server = Banner(banner)
    try:
        yield server
    finally:
        server.close()
