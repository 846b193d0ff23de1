"""PostgreSQL's run-level data: initdb and `pgbench -i` once per run, outside any measurement.

The init server runs on the host as the server's user, on a free loopback port, and is shut
down before any trial starts; each trial then starts from a copy of the same directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from bench.cgroups.manage import create_cgroup
from bench.errors import BenchError
from bench.probes import Probe, wait_answers
from bench.spec import Limits

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "bench"
PG_INIT_TIMEOUT_S = 300.0
PG_READY_TIMEOUT_S = 30.0
PG_STOP_TIMEOUT_S = 30.0


def pg_argv(data_dir: str, listen_host: str, port: int) -> list[str]:
    """The server's argv on `data_dir`, listening on listen_host:port only (TCP, no socket)."""
    options = {
        "listen_addresses": listen_host,
        "port": str(port),
        # No Unix socket: its path limit (107 bytes) and the clients' use of TCP.
        "unix_socket_directories": "",
        # /dev/shm is absent or small in some runtimes; mmap files live in the data dir.
        "dynamic_shared_memory_type": "mmap",
        "max_connections": "100",
        # A commit does not wait for its WAL flush: the disk is the same device under every
        # runtime (the data dir is in the trial's io dir), and waiting for it would make
        # TPC-B-like runs measure its flush latency instead of the runtime's CPU and network
        # path. The WAL writer still flushes every 200 ms.
        "synchronous_commit": "off",
    }
    argv = [str(PG_BIN / "postgres"), "-D", data_dir]
    for key, value in options.items():
        argv += ["-c", f"{key}={value}"]
    return argv


def init_template(
    template: Path, pgbench_scale: int, user: tuple[int, int], cgroup_name: str
) -> None:
    """`template`: a data directory with pgbench's tables, which every trial copies.

    initdb took ~2.4 s here; then a server on a free loopback port, `pgbench -i`, and a
    clean shutdown (a checkpoint: the copies start without crash recovery). The server runs
    in the bench cgroup `cgroup_name`: a run killed meanwhile leaves it to `bench gc`.
    """
    if template.is_dir():
        return
    uid, gid = user
    state_dir = template.parent
    state_dir.mkdir(parents=True, exist_ok=True)
    staging = template.with_name(f"{template.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    os.chown(staging, uid, gid)
    argv = [str(PG_BIN / "initdb"), "-D", str(staging), "-U", PG_USER, "--auth=trust"]
    argv += ["--no-sync", "--no-instructions", "--locale=C", "--encoding=UTF8"]
    # TZ=GMT: initdb writes the zone it finds into postgresql.conf, and any other zone
    # needs /usr/share/zoneinfo, which the image does not carry; GMT is built in.
    env = {"PATH": "/usr/bin:/bin", "TZ": "GMT", "LC_ALL": "C"}
    proc = subprocess.run(
        argv, cwd=staging, env=env, user=uid, group=gid, extra_groups=[],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BenchError(
            f"initdb for the postgres service failed (exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[-500:]}; uid {uid} must be able to reach "
            f"{state_dir} (o+x on every parent directory)"
        )
    # initdb trusts loopback only; in bridge and published mode the client's connection
    # comes from the bridge's host end (e.g. 172.26.0.1). The server listens on loopback
    # alone in host mode, and otherwise only inside a namespace the run created.
    with (staging / "pg_hba.conf").open("a") as hba:
        hba.write("host all all 0.0.0.0/0 trust\n")
    try:
        _pgbench_init(staging, pgbench_scale, (uid, gid), env, cgroup_name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    staging.rename(template)


def _pgbench_init(
    data_dir: Path, scale: int, user: tuple[int, int], env: dict[str, str], cgroup_name: str
) -> None:
    """Start a server on `data_dir`, create pgbench's tables at `scale`, stop it cleanly."""
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        raise BenchError("pgbench is not installed: apt-get install postgresql-client")
    port = _free_loopback_port()
    log = data_dir / "init-server.log"
    cgroup = create_cgroup(cgroup_name, Limits())

    def in_child() -> None:
        # Join first, as root (Popen's user= drops before preexec_fn, and nobody may not
        # write cgroup.procs), then drop: bench.runtimes.bare does the same for a trial.
        cgroup.join_current_process()
        os.setgroups([])
        os.setgid(user[1])
        os.setuid(user[0])

    try:
        with log.open("wb") as out:
            server = subprocess.Popen(
                pg_argv(str(data_dir), "127.0.0.1", port), cwd=data_dir, env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=in_child,
            )  # fmt: skip
    except BaseException:
        cgroup.remove()
        raise
    try:
        if not wait_answers("127.0.0.1", port, Probe("postgres", user=PG_USER), PG_READY_TIMEOUT_S):
            from bench.workloads import last_lines

            why = " | ".join(last_lines(log, 3)) or "no output"
            raise BenchError(f"postgres did not start for pgbench -i: {why}")
        argv = [pgbench, "-i", "-s", str(scale), "-q", "-h", "127.0.0.1", "-p", str(port)]
        proc = subprocess.run(
            [*argv, "-U", PG_USER, "postgres"], env=env, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, check=False, timeout=PG_INIT_TIMEOUT_S,
        )  # fmt: skip
        if proc.returncode != 0:
            raise BenchError(
                f"pgbench -i -s {scale} failed (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-500:]}"
            )
    finally:
        try:
            _stop_postgres(server)
        finally:
            cgroup.kill_all()  # anything the server left (it stops its children itself)
            cgroup.remove()
    log.unlink()


def _stop_postgres(server: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT: abort sessions, checkpoint, exit); SIGKILL past the timeout."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(PG_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
