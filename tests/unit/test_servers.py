"""The server catalogue's generated configs and the readiness probes (no root, no runtime)."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.doctor import check_tools
from bench.errors import InputError
from bench.probes import Probe, answers, listens, wait_answers
from bench.servers import (
    NOBODY,
    PG_DATA,
    SERVERS,
    Peer,
    ServerParams,
    discard,
    image_inputs,
    materialize,
    missing_files,
    pg_template,
    server_kind,
    server_user,
    static_body,
)
from tests.helpers import require


@pytest.mark.parametrize("name", sorted(SERVERS))
@pytest.mark.parametrize("network", ["host", "bridge", "published"])
def test_every_server_listens_on_the_trial_port_and_address(
    name: str, network: str, tmp_path: Path
) -> None:
    kind = server_kind(name)
    # A tier of a stack is given its peers: here one of every kind, on a bridge address.
    peers = tuple(Peer(other, other, "10.88.0.5", 8000) for other in sorted(SERVERS))
    params = ServerParams(
        port=23456,
        network=network,  # type: ignore[arg-type]
        upstream=("10.88.0.5", 8000),
        peers=peers,
    )
    setup = kind.build(params, tmp_path)
    text = " ".join(setup.argv) + "\n" + "\n".join(c.decode() for c in setup.files.values())
    assert setup.ports == (23456,)
    assert "23456" in text
    # Loopback on the host's stack, any address only inside a container's own namespace.
    expected = "127.0.0.1" if network == "host" else "0.0.0.0"
    assert expected in text
    assert ("0.0.0.0" in text) == (network != "host")
    assert setup.argv[0].startswith("/"), "argv[0] must be valid inside the image"
    assert any(Path(arg) in kind.binaries for arg in setup.argv), setup.argv
    for rel in [*setup.files, *setup.dirs]:
        assert not Path(rel).is_absolute() and ".." not in Path(rel).parts


def test_nginx_runs_in_the_foreground_with_every_path_in_the_io_dir(tmp_path: Path) -> None:
    setup = server_kind("nginx-static").build(ServerParams(port=18080), tmp_path)
    conf = setup.files["nginx.conf"].decode()
    assert "daemon off;" in conf and "pid nginx.pid;" in conf
    for line in conf.splitlines():
        for word in line.replace(";", " ").split():
            assert not word.startswith("/"), f"absolute path in nginx.conf: {line}"
    body = setup.files[f"www{setup.target}"]
    assert len(body) == 1024 and body == static_body(1024)
    assert setup.probe == Probe("http", path=setup.target)


@pytest.mark.parametrize("name", ["nginx-static", "nginx-proxy"])
def test_nginx_accepts_its_generated_config(name: str, tmp_path: Path) -> None:
    """nginx's own config test (-t) parses what bench generates."""
    require(
        shutil.which("nginx") is not None, "nginx is not installed (apt-get install nginx-light)"
    )
    setup = server_kind(name).build(ServerParams(port=18080, upstream=("127.0.0.1", 1)), tmp_path)
    materialize(setup, tmp_path, None)
    proc = subprocess.run(
        [*setup.argv, "-t"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "syntax is ok" in proc.stderr


def test_nginx_proxy_needs_an_upstream(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="upstream"):
        server_kind("nginx-proxy").build(ServerParams(port=1), tmp_path)


def test_redis_config_has_no_persistence_and_stays_in_the_foreground(tmp_path: Path) -> None:
    conf = server_kind("redis").build(ServerParams(port=16379), tmp_path).files["redis.conf"]
    lines = conf.decode().splitlines()
    assert "daemonize no" in lines and 'save ""' in lines and "appendonly no" in lines
    assert "dir ." in lines


def test_postgres_copies_the_run_template_and_runs_as_non_root(tmp_path: Path) -> None:
    kind = server_kind("postgres")
    setup = kind.build(ServerParams(port=15432), tmp_path)
    assert setup.copy_from == (pg_template(tmp_path, 1), PG_DATA)
    assert "unix_socket_directories=" in setup.argv
    assert "synchronous_commit=off" in setup.argv
    # Each pgbench scale has its own initialised template.
    scaled = kind.build(ServerParams(port=15432, pgbench_scale=4), tmp_path)
    assert scaled.copy_from == (pg_template(tmp_path, 4), PG_DATA)
    assert pg_template(tmp_path, 4) != pg_template(tmp_path, 1)
    assert server_user(kind, None) == NOBODY
    assert server_user(kind, (1000, 1000)) == (1000, 1000)
    assert server_user(server_kind("redis"), None) is None


def test_materialize_writes_files_copies_the_template_and_refuses_a_missing_one(
    tmp_path: Path,
) -> None:
    state, io_dir = tmp_path / "state", tmp_path / "io"
    io_dir.mkdir()
    setup = server_kind("postgres").build(ServerParams(port=15432), state)
    with pytest.raises(Exception, match="prepare_run"):
        materialize(setup, io_dir, None)
    pg_template(state, 1).mkdir(parents=True)
    (pg_template(state, 1) / "PG_VERSION").write_text("15\n")
    materialize(setup, io_dir, None)
    assert (io_dir / PG_DATA / "PG_VERSION").read_text() == "15\n"
    (io_dir / "stderr.txt").write_text("kept")
    discard(setup, io_dir)  # after the trial: the copy goes, the template and output stay
    assert not (io_dir / PG_DATA).exists() and (io_dir / "stderr.txt").exists()
    assert (pg_template(state, 1) / "PG_VERSION").exists()


def test_unknown_service_lists_the_known_ones() -> None:
    with pytest.raises(InputError, match=r"known: .*nginx-static"):
        server_kind("apache")


def test_a_missing_server_binary_is_reported_with_its_package(tmp_path: Path) -> None:
    from dataclasses import replace

    absent = tmp_path / "no-such-nginx"
    kind = replace(server_kind("nginx-static"), binaries=(absent,))
    assert missing_files(kind) == [absent]
    checks = {check.name: check for check in check_tools([kind])}
    assert checks["nginx-static server"].available is False
    assert checks["nginx-static server"].fix == "apt-get install nginx-light"


def test_image_inputs_name_the_package_of_every_path() -> None:
    kinds = [server_kind("postgres"), server_kind("redis")]
    binaries, data, packages = image_inputs(kinds)
    assert Path("/usr/bin/redis-server") in binaries
    assert Path("/usr/share/postgresql/15") in data
    assert packages[Path("/usr/bin/redis-server")] == "redis-server"


# Probes against real sockets on loopback, each answering one connection as a server would.


@pytest.fixture
def one_shot_server() -> Iterator[tuple[int, list[bytes], list[bytes]]]:
    """A listener on 127.0.0.1 that replies with the next of `replies` to each request."""
    listener = socket.create_server(("127.0.0.1", 0))
    replies: list[bytes] = []
    received: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    received.append(conn.recv(4096))
                    if replies:
                        conn.sendall(replies.pop(0))
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], replies, received
    listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
    listener.close()
    thread.join(timeout=2)


def test_http_probe_wants_200(one_shot_server: tuple[int, list[bytes], list[bytes]]) -> None:
    port, replies, received = one_shot_server
    replies += [b"HTTP/1.1 404 Not Found\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n"]
    assert not answers("127.0.0.1", port, Probe("http", path="/x.bin"))
    assert answers("127.0.0.1", port, Probe("http", path="/x.bin"))
    assert received[0].startswith(b"GET /x.bin HTTP/1.1\r\n")


def test_redis_probe_wants_pong(one_shot_server: tuple[int, list[bytes], list[bytes]]) -> None:
    port, replies, _ = one_shot_server
    replies += [b"-LOADING\r\n", b"+PONG\r\n"]
    assert not answers("127.0.0.1", port, Probe("redis"))
    assert answers("127.0.0.1", port, Probe("redis"))


def test_postgres_probe_refuses_a_server_still_starting(
    one_shot_server: tuple[int, list[bytes], list[bytes]],
) -> None:
    port, replies, received = one_shot_server
    starting = b"E" + struct.pack("!I", 20) + b"SFATAL\0C57P03\0\0\0\0\0"
    auth_ok = b"R" + struct.pack("!II", 8, 0)
    replies += [starting, auth_ok]
    probe = Probe("postgres", user="bench")
    assert not answers("127.0.0.1", port, probe)
    assert answers("127.0.0.1", port, probe)
    length, version = struct.unpack("!II", received[0][:8])
    assert length == len(received[0]) and version == 196608
    assert b"user\0bench\0" in received[0]


def test_probe_of_a_closed_port_fails_within_its_timeout() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connect is refused
        assert not answers("127.0.0.1", port, Probe("tcp"))
        assert not wait_answers("127.0.0.1", port, Probe("tcp"), timeout_s=0.2)


def test_listen_probe_reads_the_pids_network_namespace_without_connecting() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        assert listens(os.getpid(), port)
        assert answers("127.0.0.1", 1, Probe("listen"), inside=(os.getpid(), port))
        assert not answers("127.0.0.1", port, Probe("listen"))  # no pid: cannot tell
    finally:
        listener.close()
    assert not listens(os.getpid(), port)


def test_helper_cpu_counts_a_busy_helper_and_never_goes_negative_when_one_exits() -> None:
    """A real busy process is charged its CPU; a helper gone before the second read adds 0."""
    import subprocess
    import sys
    import time

    from bench.service import helper_cpu_s, helper_cpu_ticks

    busy = subprocess.Popen(
        [sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<5: pass"]
    )
    short = subprocess.Popen(
        [sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<0.3: pass"]
    )
    try:
        time.sleep(0.1)
        before = helper_cpu_ticks([busy.pid, short.pid])
        short.wait(timeout=10)
        time.sleep(0.6)
        after = helper_cpu_ticks([busy.pid, short.pid])
    finally:
        busy.kill()
        busy.wait()
    assert short.pid in before and short.pid not in after
    used_s = helper_cpu_s(before, after)
    # The busy loop ran ~0.6 s of the 0.6 s between the reads (less when the CPU is shared).
    assert 0.1 <= used_s <= 1.0, used_s
