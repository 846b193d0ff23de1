"""Does a server answer? One request of its own protocol, bounded in time.

A TCP connect alone says little: PostgreSQL accepts connections while it starts up and then
refuses them, and nginx's master listens before its worker serves.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ProbeKind = Literal["tcp", "http", "redis", "postgres", "listen"]
# /proc/<pid>/net/tcp's state column for a listening socket.
_TCP_LISTEN = "0A"
_PG_PROTOCOL_3 = 196608
_READ_BYTES = 4096


@dataclass(frozen=True)
class Probe:
    """How to tell that a server answers.

    tcp: a connect succeeds; http: GET `path` answers 200; redis: PING answers +PONG;
    listen: the port listens in the network namespace of the server's pid (no connection:
    iperf3 -s takes any connection for a test, and one that ends early broke its next test);
    postgres: a startup message as `user` is accepted.
    """

    kind: ProbeKind
    path: str = "/"
    user: str = ""


def answers(
    host: str,
    port: int,
    probe: Probe,
    timeout_s: float = 1.0,
    inside: tuple[int, int] | None = None,
) -> bool:
    """One attempt: True when the server at host:port answers `probe` correctly.

    `inside` (a pid of the server, the port it listens on in its own namespace, which a
    published port maps from) is needed by the listen probe only.
    """
    if probe.kind == "listen":
        return inside is not None and listens(*inside)
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            if probe.kind == "tcp":
                return True
            if probe.kind == "http":
                request = f"GET {probe.path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                sock.sendall(request.encode())
                return _read(sock).startswith(b"HTTP/1.1 200 ")
            if probe.kind == "redis":
                sock.sendall(b"PING\r\n")
                return _read(sock).startswith(b"+PONG")
            return _postgres_accepts(sock, probe.user)
    except OSError:
        return False


def wait_answers(
    host: str,
    port: int,
    probe: Probe,
    timeout_s: float,
    inside: tuple[int, int] | None = None,
) -> bool:
    """Probe every 50 ms until the server answers (True) or `timeout_s` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if answers(host, port, probe, timeout_s=min(1.0, timeout_s), inside=inside):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def listens(pid: int, port: int) -> bool:
    """Whether a TCP socket listens on `port` in the network namespace of `pid`."""
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == _TCP_LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


def _read(sock: socket.socket) -> bytes:
    return sock.recv(_READ_BYTES)


def _postgres_accepts(sock: socket.socket, user: str) -> bool:
    """A protocol-3 startup: 'R' with code 0 (trust auth) is ready; 'E' (starting up) is not."""
    body = struct.pack("!I", _PG_PROTOCOL_3)
    body += b"user\0" + user.encode() + b"\0database\0postgres\0\0"
    sock.sendall(struct.pack("!I", len(body) + 4) + body)
    reply = _read(sock)
    ready = len(reply) >= 9 and reply[:1] == b"R" and struct.unpack("!I", reply[5:9])[0] == 0
    if ready:
        sock.sendall(b"X" + struct.pack("!I", 4))  # Terminate: no "unexpected EOF" in its log
    return ready
