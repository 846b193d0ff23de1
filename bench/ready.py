"""Waiting until a server answers: a TCP connect plus one protocol-level exchange."""

from __future__ import annotations

import socket
import struct
import time

from bench.errors import BenchError

PROBES = ("tcp", "http", "redis", "postgres")
POLL_INTERVAL_S = 0.05
PROBE_TIMEOUT_S = 1.0
# PostgreSQL's SSLRequest: any server answers it with one byte, S or N, before any login.
_PG_SSL_REQUEST = struct.pack("!II", 8, 80877103)


def wait_ready(
    host: str, port: int, probe: str = "tcp", timeout_s: float = 30.0, path: str = "/"
) -> float:
    """Seconds until the server at host:port answered `probe`; BenchError after `timeout_s`.

    probe: "tcp" (accepts a connection; not for a one-off iperf3 -s -1, which a bare connect
    ends), "http" (GET `path` gets a status below 500), "redis" (PING gets +PONG),
    "postgres" (an SSLRequest gets S or N).
    """
    if probe not in PROBES:
        raise BenchError(f"readiness probe {probe!r}: expected one of {', '.join(PROBES)}")
    started = time.monotonic()
    last_error = "no attempt"
    while True:
        try:
            _probe_once(host, port, probe, path)
            return time.monotonic() - started
        except (OSError, ValueError) as exc:
            last_error = str(exc) or type(exc).__name__
        if time.monotonic() - started >= timeout_s:
            raise BenchError(
                f"server at {host}:{port} not ready within {timeout_s:g} s ({probe} probe): "
                f"{last_error}"
            )
        time.sleep(POLL_INTERVAL_S)


def _probe_once(host: str, port: int, probe: str, path: str) -> None:
    with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as sock:
        if probe == "tcp":
            return
        if probe == "http":
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode("ascii"))
            status_line = _read_line(sock)
            parts = status_line.split()
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
                raise ValueError(f"not an HTTP reply: {status_line[:60]!r}")
            if int(parts[1]) >= 500:
                raise ValueError(f"HTTP status {int(parts[1])}")
        elif probe == "redis":
            sock.sendall(b"PING\r\n")
            reply = _read_line(sock)
            if reply != b"+PONG":
                raise ValueError(f"redis answered {reply[:60]!r} to PING")
        else:
            sock.sendall(_PG_SSL_REQUEST)
            reply = sock.recv(1)
            if reply not in (b"S", b"N"):
                raise ValueError(f"postgres answered {reply!r} to SSLRequest")


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < 4096:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].rstrip(b"\r")
