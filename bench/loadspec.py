"""What one bounded load is (LoadSpec): its kinds and limits, checked when it is made, and
the CPU lists a load generator and its server are pinned to.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from bench.errors import InputError

KINDS = ("http", "tcp_rr", "tcp_stream", "redis", "pgbench", "mqtt")
OPEN_LOOP_KINDS = ("http", "tcp_rr", "pgbench", "mqtt")
# Kinds that measure at fixed offered rates only (a message queue has no closed loop here).
RATE_ONLY_KINDS = ("mqtt",)
MAX_DURATION_S = 600.0
MAX_CONNECTIONS = 10_000
# The default cap on requests: 600 s at 100k req/s, above anything measured here (79k).
MAX_REQUESTS = 60_000_000
# The operations each kind can run (the first is the default): redis-benchmark -t tests and
# pgbench's built-in scripts.
OPERATIONS = {
    "redis": ("get", "set", "ping_inline", "ping_mbulk", "incr", "lpush", "rpush", "lpop",
              "rpop", "sadd", "hset", "spop", "zadd", "zpopmin", "lrange_100", "mset"),
    "pgbench": ("select-only", "tpcb-like", "simple-update"),
}  # fmt: skip
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
# h2load's --rps timer fires at most every 10 ms (`max(0.01, 1 / rps)` in its source), and
# sends what came due since, back to back on the client's HTTP/1.1 connection (one request
# in flight). So each client offers at most one request per tick, and the clients connect
# spread over one tick: the aggregate is then one request every 1/rate (docs/load-generators.md).
H2LOAD_TICK_S = 0.01
H2LOAD_CLIENT_RATE_PER_S = 1 / H2LOAD_TICK_S


def parse_cpus(text: str) -> frozenset[int]:
    """A cpuset list such as "1" or "0,2-3"."""
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            cpus.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise InputError(
            f"client_cpus/server_cpus {text!r}: expected a list like 1 or 0,2-3"
        ) from None
    if not cpus or min(cpus) < 0:
        raise InputError(f"client_cpus/server_cpus {text!r}: expected a list like 1 or 0,2-3")
    return frozenset(cpus)


def format_cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))


def default_cpus() -> tuple[str, str]:
    """(server CPUs, client CPUs): the first usable CPU serves, the others load; on 2 cores
    server 0 and client 1. On one CPU both share it (and the client will look saturated)."""
    usable = sorted(os.sched_getaffinity(0))
    server = usable[:1]
    client = usable[1:] or usable
    return format_cpus(frozenset(server)), format_cpus(frozenset(client))


@dataclass(frozen=True)
class LoadSpec:
    """One bounded load: what to send, where, for how long, from which CPUs.

    kind: "http" (wrk closed loop; h2load at a rate, one HTTP/1.1 client per 100 req/s,
    `connections` unused), "tcp_rr" (sockperf), "tcp_stream" (iperf3), "redis"
    (redis-benchmark running `operation` max_requests times, default 100k: a count, not a
    duration, which then only bounds it), "pgbench" (built-in script `operation` on
    `database` as `user`), "mqtt" (bench/apps/queueapp.py's open-loop client of the
    app-queue services, through the broker at host:port). rate_per_s None is closed loop
    (as fast as `connections` allow); a number is open loop at that rate (http, tcp_rr,
    pgbench, mqtt, which has no closed loop).
    host must be loopback unless `host_created_by_run` says the run created that address.
    """

    kind: str
    port: int
    host: str = "127.0.0.1"
    path: str = "/"
    connections: int = 16
    duration_s: float = 5.0
    rate_per_s: float | None = None
    client_cpus: str | None = None
    server_cpus: str | None = None
    threads: int | None = None
    message_size_bytes: int = 64
    request_timeout_s: float = 2.0
    max_requests: int | None = None
    operation: str | None = None
    database: str = "postgres"
    user: str = "bench"
    host_created_by_run: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"load kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError:
            raise InputError(f"load host {self.host!r}: expected an IP address") from None
        if address not in LOOPBACK and not self.host_created_by_run:
            raise InputError(
                f"load host {self.host}: bench sends load only to 127.0.0.1 or to addresses "
                "the run created (set host_created_by_run for those)"
            )
        _check_range("port", self.port, 1, 65_535)
        _check_range("connections", self.connections, 1, MAX_CONNECTIONS)
        _check_range("duration_s", self.duration_s, 1, MAX_DURATION_S)
        if self.duration_s != int(self.duration_s):
            raise InputError(
                f"load duration_s = {self.duration_s}: expected whole seconds "
                "(wrk, sockperf, iperf3 and pgbench take whole seconds)"
            )
        if self.max_requests is not None:
            _check_range("max_requests", self.max_requests, 1, MAX_REQUESTS)
        allowed = OPERATIONS.get(self.kind, ())
        if self.operation is not None and self.operation not in allowed:
            expected = ", ".join(allowed) or f"none for kind {self.kind}"
            raise InputError(f"load operation {self.operation!r}: expected {expected}")
        for name in ("database", "user"):
            value = getattr(self, name)
            if not value or not all(c.isalnum() or c in "_-" for c in value):
                raise InputError(f"load {name} {value!r}: expected letters, digits, _ or -")
        _check_range("message_size_bytes", self.message_size_bytes, 14, 65_000)
        _check_range("request_timeout_s", self.request_timeout_s, 0.001, 60)
        if self.threads is not None:
            _check_range("threads", self.threads, 1, self.connections)
        if self.rate_per_s is not None:
            _check_range("rate_per_s", self.rate_per_s, 1, 10_000_000)
            if self.kind not in OPEN_LOOP_KINDS:
                raise InputError(
                    f"load kind {self.kind}: open loop (rate_per_s) needs kind "
                    f"{', '.join(OPEN_LOOP_KINDS)}; redis-benchmark and iperf3 have no rate "
                    "mode (docs/load-generators.md)"
                )
            most = MAX_CONNECTIONS * H2LOAD_CLIENT_RATE_PER_S
            if self.kind == "http" and self.rate_per_s > most:
                raise InputError(
                    f"load rate_per_s = {self.rate_per_s:g}: HTTP at a rate takes one client "
                    f"per {H2LOAD_CLIENT_RATE_PER_S:g} req/s, at most {MAX_CONNECTIONS}: "
                    f"expected at most {most:g}"
                )
        elif self.kind in RATE_ONLY_KINDS:
            raise InputError(
                f"load kind {self.kind} measures at fixed offered rates only: give "
                "load.rate_per_s, e.g. rate_per_s = [200, 500]"
            )
        if not self.path.startswith("/") or any(c.isspace() or ord(c) < 32 for c in self.path):
            raise InputError(f"load path {self.path!r}: expected /... without spaces")
        for cpus in (self.client_cpus, self.server_cpus):
            if cpus is not None:
                parse_cpus(cpus)

    @property
    def chosen_operation(self) -> str:
        """`operation`, or the kind's default ("" for kinds without operations)."""
        return self.operation or OPERATIONS.get(self.kind, ("",))[0]

    def resolved_client_cpus(self) -> frozenset[int]:
        """client_cpus, or every usable CPU the server does not use (default server: CPU 0)."""
        if self.client_cpus is not None:
            return parse_cpus(self.client_cpus)
        usable = frozenset(os.sched_getaffinity(0))
        server = parse_cpus(self.server_cpus or default_cpus()[0])
        return (usable - server) or usable


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise InputError(f"load {name} = {value}: expected {low} to {high}")
