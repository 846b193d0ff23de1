"""Every server of the catalogue starts under bare metal in a bench cgroup, answers, stops."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.cgroups import list_bench_cgroups
from bench.cgroups.manage import can_create_cgroups
from bench.probes import answers, wait_answers
from bench.runtimes.bare import BareRuntime
from bench.servers import (
    SERVERS,
    ServerParams,
    materialize,
    missing_files,
    prepare_run,
    server_kind,
    server_user,
)
from bench.spec import STDERR_FILE, StartSpec
from tests.helpers import CGROUP_PREFIX, require, require_root
from tests.hostservers import free_port, server_dir, set_up

pytestmark = pytest.mark.integration

READY_TIMEOUT_S = 30.0


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def state_dir() -> Iterator[Path]:
    """The run-level directory (PostgreSQL's initdb template), reachable by nobody."""
    with server_dir("bench-test-servers-") as path:
        yield path


# Tiers that need peers (nginx-proxy, app-queue's services) run in their stacks' tests.
@pytest.mark.parametrize("name", [name for name, kind in SERVERS.items() if kind.standalone])
def test_server_starts_answers_its_probe_and_stops(name: str, state_dir: Path) -> None:
    require_root()
    ok, why = can_create_cgroups()
    require(ok, f"cannot create cgroups here: {why}")
    kind = server_kind(name)
    missing = missing_files(kind)
    require(not missing, f"{missing} missing: apt-get install {kind.package}")
    port = free_port()
    params = ServerParams(port=port, network="host")
    io_dir = state_dir / f"io-{name}"
    setup, user = set_up(kind, params, state_dir, io_dir, name)
    handle = BareRuntime().start(
        StartSpec(name=f"{CGROUP_PREFIX}{name}", argv=setup.argv, io_dir=io_dir, user=user)
    )
    try:
        ready = wait_answers(
            "127.0.0.1", port, setup.probe, READY_TIMEOUT_S, inside=(handle.pid, port)
        )
        stderr = (io_dir / STDERR_FILE).read_text(errors="replace")[-2000:]
        assert ready, f"{name} did not answer {setup.probe} on port {port}: {stderr}"
        assert handle.wait(0.0) is None, "the server must stay in the foreground"
        assert answers("127.0.0.1", port, setup.probe, inside=(handle.pid, port))
    finally:
        handle.stop()
    assert not listening(port), f"{name} still listens on {port} after stop()"
    assert [p for p in list_bench_cgroups() if CGROUP_PREFIX in str(p)] == []


def test_every_server_runs_from_the_workload_image(tmp_path: Path) -> None:
    """The image carries each server with its libraries: each prints its version in a chroot."""
    require_root()
    from bench.image import build_image
    from bench.servers import image_inputs

    kinds = list(SERVERS.values())
    for kind in kinds:
        require(not missing_files(kind), f"apt-get install {kind.package}")
    binaries, data, packages = image_inputs(kinds)
    image = build_image(binaries, cache_dir=tmp_path, data_paths=data, packages=packages)
    for binary in binaries:
        assert str(binary) in image.binaries, binary
    assert (image.rootfs_dir / "etc/passwd").read_text().startswith("root:x:0:0:")
    assert (image.rootfs_dir / "usr/share/postgresql/15/timezonesets/Default").is_file()
    versions = {
        "/usr/sbin/nginx": ["-v"],
        "/usr/bin/redis-server": ["--version"],
        "/usr/lib/postgresql/15/bin/postgres": ["--version"],
        "/usr/bin/sockperf": ["--version"],
        "/usr/bin/iperf3": ["--version"],
    }
    for program, args in versions.items():
        proc = subprocess.run(
            ["chroot", str(image.rootfs_dir), program, *args],
            capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
        assert proc.returncode == 0, f"{program}: {proc.stderr}"


def test_postgres_template_holds_pgbench_tables_at_its_scale_and_leaves_no_server(
    state_dir: Path,
) -> None:
    """pgbench -i runs once per run, before any trial: each trial's copy has the tables."""
    require_root()
    import psutil

    from bench.servers import pg_template

    kind = server_kind("postgres")
    require(not missing_files(kind), f"apt-get install {kind.package}")
    require(shutil.which("psql") is not None, "apt-get install postgresql-client")
    params = ServerParams(port=free_port(), network="host", pgbench_scale=2)
    prepare_run(kind, params, state_dir, server_user(kind, None), f"{CGROUP_PREFIX}prep-template")
    template = pg_template(state_dir, 2)
    assert not (template / "postmaster.pid").exists(), "the init server was not shut down"
    running = [p.info for p in psutil.process_iter(["pid", "cmdline"]) if str(template) in
               " ".join(p.info["cmdline"] or [])]  # fmt: skip
    assert running == []
    setup = kind.build(params, state_dir)
    io_dir = state_dir / "io-pgbench-scale"
    io_dir.mkdir()
    materialize(setup, io_dir, server_user(kind, None))
    handle = BareRuntime().start(
        StartSpec(
            name=f"{CGROUP_PREFIX}pgscale",
            argv=setup.argv,
            io_dir=io_dir,
            user=server_user(kind, None),
        )
    )
    try:
        assert wait_answers("127.0.0.1", params.port, setup.probe, READY_TIMEOUT_S)
        query = "select count(*) from pgbench_accounts"
        proc = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(params.port), "-U", "bench", "-tAc", query,
             "postgres"], capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "200000"  # 100,000 accounts per unit of scale
    finally:
        handle.stop()
    assert not listening(params.port)


def running(pid: int) -> bool:
    """Alive and not a zombie (the killed bench's orphans are reaped by whoever adopts them)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_an_init_server_that_a_sigkill_left_is_found_and_removed_by_gc() -> None:
    """pgbench -i's server runs in a bench cgroup: when bench is SIGKILLed during the init,
    the server outlives it there, and `bench gc` (bare metal's leftovers) kills and removes it."""
    require_root()
    kind = server_kind("postgres")
    require(not missing_files(kind), f"apt-get install {kind.package}")
    require(shutil.which("pgbench") is not None, "apt-get install postgresql-client")
    state = Path(tempfile.mkdtemp(prefix="bench-test-pgkill-"))
    state.chmod(0o711)
    name = f"{CGROUP_PREFIX}prep-killed"
    uid, gid = server_user(kind, None) or (65534, 65534)
    script = (
        "import sys; from pathlib import Path; from bench.pginit import init_template; "
        "init_template(Path(sys.argv[1]), 40, (int(sys.argv[2]), int(sys.argv[3])), sys.argv[4])"
    )
    bench = subprocess.Popen(
        [sys.executable, "-c", script, str(state / "template"), str(uid), str(gid), name],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        servers: list[int] = []
        while not servers and time.monotonic() < deadline and bench.poll() is None:
            time.sleep(0.1)
            servers = [
                pid
                for cgroup in list_bench_cgroups()
                if cgroup.name == name
                for pid in map(int, (cgroup / "cgroup.procs").read_text().split())
            ]
        assert servers, "the init server never appeared in its bench cgroup"
        bench.kill()
        bench.wait()
        time.sleep(0.5)
        assert any(running(pid) for pid in servers), "the server died with bench"
        assert [c for c in list_bench_cgroups() if c.name == name]
        BareRuntime().remove_leftovers()
        assert [c for c in list_bench_cgroups() if c.name == name] == []
        assert not any(running(pid) for pid in servers)
    finally:
        if bench.poll() is None:
            bench.kill()
        shutil.rmtree(state, ignore_errors=True)
