"""The server catalogue: how each service workload's server runs inside the workload image.

A server kind says which binaries (and data files) go into the image, the argv that starts
it in the foreground, the config files bench generates into the trial's io dir, the port it
listens on, how to tell that it answers, and which load generator drives it. Configs are
built here from typed values only; nothing from a scenario reaches a shell.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError, InputError
from bench.pginit import PG_BIN, PG_USER, init_template, pg_argv
from bench.probes import Probe
from bench.pyimage import python_binaries, python_data_paths
from bench.queuesvc import APP_SOURCE, MOSQUITTO, mosquitto, queue_orders, queue_pricing
from bench.spec import NetworkMode
from bench.webappsvc import APP_SOURCE as WEBAPP_SOURCE
from bench.webappsvc import PACKAGES as WEBAPP_PACKAGES
from bench.webappsvc import PSYCOPG2_EXTENSION, webapp

# Servers run as nobody:nogroup when the scenario names no user: PostgreSQL refuses root,
# and nginx's root master chowns its temp dirs to its workers' user, which containers
# without CAP_CHOWN refuse ("chown ... failed (1: Operation not permitted)" under docker).
NOBODY = (65534, 65534)
PG_SHARE = Path("/usr/share/postgresql/15")
# The server checks that its library dir exists; plpgsql is the one library initdb loads.
PG_PLPGSQL = Path("/usr/lib/postgresql/15/lib/plpgsql.so")
PG_DATA = "pgdata"
PG_TEMPLATE = "postgres-template"
STATIC_ROOT = "www"


@dataclass(frozen=True)
class Peer:
    """Another tier of the same trial, as this tier reaches it (bench.stacks)."""

    tier: str
    server: str  # its server kind
    host: str
    port: int


@dataclass(frozen=True)
class ServerParams:
    """What a trial decides about a server: its port and the address it listens on."""

    port: int
    network: NetworkMode = "host"
    body_bytes: int = 1024  # nginx-static: size of the file served
    upstream: tuple[str, int] | None = None  # nginx-proxy: where requests go (its first peer)
    pgbench_scale: int = 1  # postgres: the scale of the pgbench tables (pgbench -i -s)
    # The tiers this one needs, started and answering before it (multi-tier stacks).
    peers: tuple[Peer, ...] = ()

    def peer(self, server: str) -> tuple[str, int]:
        """(host, port) of the needed tier whose server kind is `server`."""
        for peer in self.peers:
            if peer.server == server:
                return peer.host, peer.port
        raise InputError(f"this tier needs a {server} tier; list it in the stack's needs")

    @property
    def listen_host(self) -> str:
        """Loopback on the host's stack; every address inside a container's own namespace.

        In host mode (and bare metal) 0.0.0.0 would expose the server on the host's
        external interfaces; in bridge/published mode the namespace is the container's.
        """
        return "0.0.0.0" if self.network in ("bridge", "published") else "127.0.0.1"


@dataclass(frozen=True)
class ServerSetup:
    """One server of a trial: argv inside the image and what to write into its io dir.

    Paths are relative to the io dir (bare metal runs in it, containers mount it at
    /bench), so the same argv is valid in every runtime.
    """

    argv: tuple[str, ...]
    files: dict[str, bytes] = field(default_factory=dict)
    dirs: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    probe: Probe = field(default_factory=lambda: Probe("tcp"))
    # The path an HTTP client requests; "/" where the protocol has none.
    target: str = "/"
    # A run-level directory copied into the io dir under the given name (PostgreSQL's data).
    copy_from: tuple[Path, str] | None = None


@dataclass(frozen=True)
class ServerKind:
    """A kind of server a scenario can name as `service`."""

    name: str
    package: str  # the Debian package that provides it (doctor's fix)
    client: str  # the load generator's kind (bench.loadgen.LoadSpec)
    binaries: tuple[Path, ...]
    build: Callable[[ServerParams, Path], ServerSetup]  # (params, run-level state dir)
    default_port: int
    non_root: bool = False  # refuses to run as root: started as nobody
    # False: it only makes sense in front of another tier (multi-tier scenarios).
    standalone: bool = True
    data_paths: tuple[Path, ...] = ()
    # Work done once per run, outside any measurement: (params, state dir, the server's
    # uid/gid, the name of the bench cgroup its processes run in, for `bench gc` to find).
    prepare: Callable[[ServerParams, Path, tuple[int, int] | None, str], None] | None = None


def _lines(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def nginx_common(params: ServerParams) -> list[str]:
    """The top of every nginx config: foreground, pid/temp/log paths in the io dir."""
    temp = "; ".join(
        f"{kind}_temp_path tmp/{kind}" for kind in ("client_body", "proxy", "fastcgi", "uwsgi")
    )
    return [
        "daemon off;",
        "master_process on;",
        "worker_processes 1;",
        "pid nginx.pid;",
        "error_log stderr warn;",
        # Started as root the workers drop to these (the image's own account files);
        # started as another user nginx ignores the directive.
        "user nobody nogroup;",
        "events { worker_connections 1024; }",
        "http {",
        "  access_log off;",
        f"  {temp}; scgi_temp_path tmp/scgi;",
        "  default_type application/octet-stream;",
        "  keepalive_requests 1000000;",
    ]


def static_body(size_bytes: int) -> bytes:
    """A deterministic body of `size_bytes` (the same bytes in every runtime)."""
    pattern = b"bench static body 0123456789abcdefghijklmnopqrstuvwxyz\n"
    return (pattern * (size_bytes // len(pattern) + 1))[:size_bytes]


def nginx_static(params: ServerParams, _state_dir: Path) -> ServerSetup:
    name = f"static-{params.body_bytes}.bin"
    conf = [
        *nginx_common(params),
        f"  server {{ listen {params.listen_host}:{params.port}; root {STATIC_ROOT}; }}",
        "}",
    ]
    return ServerSetup(
        argv=_nginx_argv(),
        files={
            "nginx.conf": _lines(*conf),
            f"{STATIC_ROOT}/{name}": static_body(params.body_bytes),
        },
        dirs=("tmp",),
        ports=(params.port,),
        probe=Probe("http", path=f"/{name}"),
        target=f"/{name}",
    )


def nginx_proxy(params: ServerParams, _state_dir: Path) -> ServerSetup:
    """nginx as a reverse proxy to `params.upstream` over kept-alive HTTP/1.1."""
    if params.upstream is None:
        raise InputError("nginx-proxy needs an upstream (the tier behind it)")
    host, port = params.upstream
    conf = [
        *nginx_common(params),
        f"  upstream app {{ server {host}:{port}; keepalive 64; }}",
        f"  server {{ listen {params.listen_host}:{params.port};",
        "    location / { proxy_pass http://app; proxy_http_version 1.1;",
        '      proxy_set_header Connection ""; }',
        "  }",
        "}",
    ]
    return ServerSetup(
        argv=_nginx_argv(),
        files={"nginx.conf": _lines(*conf)},
        dirs=("tmp",),
        ports=(params.port,),
        probe=Probe("tcp"),
        target="/",
    )


def _nginx_argv() -> tuple[str, ...]:
    # -p .: every relative path in the config is in the io dir; -e: no default log file.
    return ("/usr/sbin/nginx", "-p", ".", "-c", "nginx.conf", "-e", "stderr")


def redis(params: ServerParams, _state_dir: Path) -> ServerSetup:
    conf = _lines(
        f"port {params.port}",
        f"bind {params.listen_host}",
        # The namespace is the container's own in bridge/published mode; the default would
        # refuse the host's connections there.
        "protected-mode no",
        "daemonize no",
        "supervised no",
        "pidfile redis.pid",
        'logfile ""',
        "dir .",
        'save ""',
        "appendonly no",
    )
    return ServerSetup(
        argv=("/usr/bin/redis-server", "redis.conf"),
        files={"redis.conf": conf},
        ports=(params.port,),
        probe=Probe("redis"),
    )


def pg_template(state_dir: Path, pgbench_scale: int) -> Path:
    """The run's initialised data directory for pgbench tables of this scale."""
    return state_dir / f"{PG_TEMPLATE}-s{pgbench_scale}"


def postgres(params: ServerParams, state_dir: Path) -> ServerSetup:
    """PostgreSQL on a copy of the run's data directory (initdb and pgbench -i ran once, in
    prepare_run), so every trial starts from the same data."""
    return ServerSetup(
        argv=tuple(pg_argv(PG_DATA, params.listen_host, params.port)),
        ports=(params.port,),
        probe=Probe("postgres", user=PG_USER),
        copy_from=(pg_template(state_dir, params.pgbench_scale), PG_DATA),
    )


def tcp_rr(params: ServerParams, _state_dir: Path) -> ServerSetup:
    """sockperf's server: echoes each message back (request/response latency)."""
    return ServerSetup(
        argv=(
            "/usr/bin/sockperf",
            "server",
            "--tcp",
            "-i",
            params.listen_host,
            "-p",
            str(params.port),
        ),
        ports=(params.port,),
    )


def tcp_stream(params: ServerParams, _state_dir: Path) -> ServerSetup:
    """iperf3's server: receives a bulk TCP stream (throughput).

    Each stream's buffer is a mkstemp file in $TMPDIR (default /tmp); under podman and lxc
    that failed as nobody ("unable to create a new stream: Bad file descriptor"), so
    busybox's env points it at the io dir. Probed without a connection: iperf3 -s takes
    any connection for a test, and one that ends early reset the next client once.
    """
    iperf3 = ("/usr/bin/iperf3", "--server", "--bind", params.listen_host)
    return ServerSetup(
        argv=("/bin/busybox", "env", "TMPDIR=.", *iperf3, "--port", str(params.port)),
        probe=Probe("listen"),
        ports=(params.port,),
    )


def server_kind(name: str) -> ServerKind:
    kind = SERVERS.get(name)
    if kind is None:
        from bench.stacks import service_names

        raise InputError(f"unknown service {name!r}; known: {', '.join(service_names())}")
    return kind


def missing_files(kind: ServerKind) -> list[Path]:
    """The kind's binaries and data paths that this host lacks (install `kind.package`)."""
    return [path for path in (*kind.binaries, *kind.data_paths) if not path.exists()]


def image_inputs(kinds: list[ServerKind]) -> tuple[list[Path], list[Path], dict[Path, str]]:
    """(binaries, data paths, the package of each) the image needs for these servers."""
    binaries = sorted({path for kind in kinds for path in kind.binaries})
    data = sorted({path for kind in kinds for path in kind.data_paths})
    packages = {path: kind.package for kind in kinds for path in (*kind.binaries, *kind.data_paths)}
    return binaries, data, packages


def server_user(kind: ServerKind, user: tuple[int, int] | None) -> tuple[int, int] | None:
    """The (uid, gid) the server runs as: the scenario's, else nobody where root is refused."""
    if user is None and kind.non_root:
        return NOBODY
    return user


def prepare_run(
    kind: ServerKind,
    params: ServerParams,
    state_dir: Path,
    user: tuple[int, int] | None,
    cgroup_name: str,
) -> None:
    """Work a kind needs once per run, outside any measurement (PostgreSQL's initdb); its
    processes run in the bench cgroup `cgroup_name`, so a killed run leaves them to gc."""
    if kind.prepare is not None:
        kind.prepare(params, state_dir, server_user(kind, user), cgroup_name)


def postgres_initdb(
    params: ServerParams, state_dir: Path, user: tuple[int, int] | None, cgroup_name: str
) -> None:
    """The run's data directory with pgbench's tables at the workload's scale (bench.pginit)."""
    template = pg_template(state_dir, params.pgbench_scale)
    init_template(template, params.pgbench_scale, user or NOBODY, cgroup_name)


def materialize(setup: ServerSetup, io_dir: Path, user: tuple[int, int] | None) -> None:
    """Write the setup's files and dirs into `io_dir`, owned by the server's user."""
    for rel in setup.dirs:
        (io_dir / rel).mkdir(parents=True, exist_ok=True)
    for rel, content in setup.files.items():
        path = io_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    if setup.copy_from is not None:
        source, rel = setup.copy_from
        if not source.is_dir():
            raise BenchError(f"{source} is missing: prepare_run() was not called for this run")
        shutil.copytree(source, io_dir / rel, symlinks=True)
    if user is not None:
        for path in [io_dir, *io_dir.rglob("*")]:
            os.lchown(path, *user)


def discard(setup: ServerSetup, io_dir: Path) -> None:
    """Remove the trial's copy of run-level data (a PostgreSQL data dir, 40 MB and more) once
    its server stopped; the io dir keeps the server's output and config."""
    if setup.copy_from is not None:
        shutil.rmtree(io_dir / setup.copy_from[1], ignore_errors=True)


NGINX = (Path("/usr/sbin/nginx"),)
REDIS = (Path("/usr/bin/redis-server"),)
SOCKPERF = (Path("/usr/bin/sockperf"),)
IPERF3 = (Path("/usr/bin/iperf3"),)
POSTGRES = (PG_BIN / "postgres", PG_PLPGSQL)

PYTHON_APP = python_binaries()
PYTHON_APP_DATA = (*python_data_paths(("paho",)), APP_SOURCE)
WEBAPP_DATA = (*python_data_paths(WEBAPP_PACKAGES), WEBAPP_SOURCE)
# One row per server: name, Debian package (doctor's fix), client kind, binaries, builder,
# default port, then what differs from the defaults. What each serves: its builder's docstring.
SERVERS: dict[str, ServerKind] = {
    kind.name: kind
    for kind in (
        ServerKind(
            "nginx-static", "nginx-light", "http", NGINX, nginx_static, 18080, non_root=True
        ),
        ServerKind(
            "nginx-proxy",
            "nginx-light",
            "http",
            NGINX,
            nginx_proxy,
            18081,
            non_root=True,
            standalone=False,
        ),
        ServerKind("redis", "redis-server", "redis", REDIS, redis, 16379),
        ServerKind("tcp-rr", "sockperf", "tcp_rr", SOCKPERF, tcp_rr, 11111),
        ServerKind("tcp-stream", "iperf3", "tcp_stream", IPERF3, tcp_stream, 15201),
        ServerKind(
            "postgres",
            "postgresql-15",
            "pgbench",
            POSTGRES,
            postgres,
            15432,
            non_root=True,
            data_paths=(PG_SHARE,),
            prepare=postgres_initdb,
        ),
        # app-queue (bench.queuesvc): a broker and two services, tiers of one stack only.
        ServerKind(
            "mosquitto",
            "mosquitto",
            "mqtt",
            (MOSQUITTO,),
            mosquitto,
            11883,
            non_root=True,
            standalone=False,
        ),
        ServerKind(
            "queue-pricing",
            "python3-paho-mqtt",
            "mqtt",
            PYTHON_APP,
            queue_pricing,
            18091,
            non_root=True,
            standalone=False,
            data_paths=PYTHON_APP_DATA,
        ),
        ServerKind(
            "queue-orders",
            "python3-paho-mqtt",
            "mqtt",
            PYTHON_APP,
            queue_orders,
            18092,
            non_root=True,
            standalone=False,
            data_paths=PYTHON_APP_DATA,
        ),
        # app-multitier (bench.webappsvc): the app tier in front of postgres and redis.
        ServerKind(
            "webapp",
            "gunicorn python3-psycopg2 python3-redis",
            "http",
            (*PYTHON_APP, PSYCOPG2_EXTENSION),
            webapp,
            18000,
            non_root=True,
            standalone=False,
            data_paths=WEBAPP_DATA,
        ),
    )
}
