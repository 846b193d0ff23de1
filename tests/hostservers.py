"""Servers started on the host for the load generator's tests and benchmarks.

Each runs pinned to the server CPU in its own process group and is stopped with a check
that nothing listens on its port any more.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.loadspec import default_cpus
from bench.probes import Probe, answers, wait_answers
from bench.servers import (
    ServerKind,
    ServerParams,
    ServerSetup,
    materialize,
    nginx_static,
    prepare_run,
    server_user,
)
from tests.helpers import CGROUP_PREFIX, require, require_root

SERVER_CPUS, CLIENT_CPUS = default_cpus()


def set_up(
    kind: ServerKind, params: ServerParams, state_dir: Path, io_dir: Path, label: str
) -> tuple[ServerSetup, tuple[int, int] | None]:
    """`kind`'s run-level step, its setup and its files in the new `io_dir`, as bench's runner
    makes them; with the user it runs as."""
    user = server_user(kind, None)
    # pgbench -i's server runs in a bench cgroup of this name (bench gc finds it).
    prepare_run(kind, params, state_dir, user, f"{CGROUP_PREFIX}prep-{label}")
    setup = kind.build(params, state_dir)
    io_dir.mkdir()
    materialize(setup, io_dir, user)
    return setup, user


def require_tools(*tools: str) -> None:
    for tool in tools:
        require(
            shutil.which(tool) is not None,
            f"{tool} is not installed (scripts/install-host-deps.sh)",
        )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    target: str = "/"

    def stop(self) -> None:
        """Stop the server's whole process group and check that nothing listens any more."""
        with_group(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with_group(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        with_group(self.process.pid, signal.SIGKILL)  # workers that outlived the master
        assert not answers(self.host, self.port, Probe("tcp"), timeout_s=0.5)


def with_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def start_server(
    argv: list[str],
    host: str,
    port: int,
    cwd: Path,
    probe: Probe,
    user: tuple[int, int] | None = None,
) -> Server:
    """`argv` pinned to the server CPU, as `user` (uid, gid) when given, answering `probe`."""
    process = subprocess.Popen(
        ["taskset", "-c", SERVER_CPUS, *argv],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        user=user[0] if user else None,
        group=user[1] if user else None,
        extra_groups=[] if user else None,
    )
    server = Server(process, host, port)
    if not wait_answers(host, port, probe, timeout_s=10):
        server.stop()
        pytest.fail(f"{argv[0]} did not answer {probe.kind} on {host}:{port} within 10 s")
    return server


@contextlib.contextmanager
def server_dir(prefix: str = "bench-loadgen-") -> Iterator[Path]:
    """A directory servers running as nobody can read, unlike pytest's 0700 tmp_path."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def nginx_on_host() -> Iterator[Server]:
    """bench's nginx-static server (1 KiB file) on 127.0.0.1, pinned to the server CPU."""
    require_root()
    require_tools("nginx", "wrk", "taskset")
    with server_dir() as directory:
        setup = nginx_static(ServerParams(port=free_port()), directory)
        materialize(setup, directory, None)
        server = start_server(list(setup.argv), "127.0.0.1", setup.ports[0], directory, setup.probe)
        server.target = setup.target
        try:
            yield server
        finally:
            server.stop()
