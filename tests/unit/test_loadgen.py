"""LoadSpec's guards, the generators' argv and CPU choice; no load is sent here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.clientproc import ChildRun
from bench.errors import InputError
from bench.loadgen import GENERATORS, LoadResult, _result, generator_for
from bench.loadparse import ParsedLoad
from bench.loadspec import LoadSpec, default_cpus, format_cpus, parse_cpus


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "gopher"}, "expected one of http, tcp_rr, tcp_stream, redis, pgbench"),
        ({"kind": "redis", "operation": "flushall"}, "operation 'flushall': expected get, set"),
        ({"operation": "get"}, "expected none for kind http"),
        ({"kind": "pgbench", "database": "x; drop"}, "load database 'x; drop'"),
        ({"kind": "redis", "rate_per_s": 100}, "needs kind http, tcp_rr, pgbench"),
        ({"kind": "tcp_stream", "rate_per_s": 100}, "iperf3 have no rate mode"),
        ({"host": "example.com"}, "expected an IP address"),
        ({"host": "10.1.2.3"}, "only to 127.0.0.1 or to addresses the run created"),
        ({"host": "8.8.8.8"}, "only to 127.0.0.1"),
        ({"port": 0}, "port = 0"),
        ({"duration_s": 3600}, "duration_s = 3600"),
        ({"duration_s": 2.5}, "expected whole seconds"),
        ({"connections": 0}, "connections = 0"),
        ({"max_requests": 0}, "max_requests = 0"),
        ({"rate_per_s": 2_000_000}, "one client per 100 req/s, at most 10000"),
        ({"path": "/a b"}, "without spaces"),
        ({"path": "x"}, "expected /"),
        ({"client_cpus": "one"}, "expected a list like 1 or 0,2-3"),
        ({"threads": 64}, "threads = 64"),
    ],
)
def test_bad_specs_are_input_errors(changes: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"kind": "http", "port": 8080, **changes}
    with pytest.raises(InputError, match=message):
        LoadSpec(**fields)  # type: ignore[arg-type]


def test_an_address_the_run_created_is_allowed_when_said_so() -> None:
    spec = LoadSpec("tcp_rr", 9000, host="10.200.0.2", host_created_by_run=True, rate_per_s=500)
    assert spec.host == "10.200.0.2"


def test_cpu_lists_round_trip() -> None:
    assert parse_cpus("0,2-3") == frozenset({0, 2, 3})
    assert format_cpus(frozenset({3, 0, 2})) == "0,2,3"


def test_default_client_cpus_avoid_the_server_cpu() -> None:
    server, client = default_cpus()
    usable = set(os.sched_getaffinity(0))
    assert parse_cpus(server) <= usable and parse_cpus(client) <= usable
    if len(usable) > 1:
        assert not parse_cpus(server) & parse_cpus(client)
    spec = LoadSpec("http", 8080, server_cpus=server)
    assert spec.resolved_client_cpus() == parse_cpus(client)
    assert LoadSpec("http", 8080, client_cpus="0").resolved_client_cpus() == {0}


def test_wrk_argv_is_a_list_with_the_request_cap(tmp_path: Path) -> None:
    spec = LoadSpec("http", 8080, path="/index.html", connections=8, duration_s=3, max_requests=900)
    argv = GENERATORS["http"].argv(spec, 2, tmp_path)
    assert argv[:6] == ["-t", "2", "-c", "8", "-d", "3s"]
    assert "http://127.0.0.1:8080/index.html" in argv
    assert argv[-2:] == ["--", "450"]  # per thread
    assert (tmp_path / "bench.lua").read_text().startswith("-- args[1]")


def test_sockperf_argv_closed_and_open_loop(tmp_path: Path) -> None:
    closed = GENERATORS["tcp_rr"].argv(LoadSpec("tcp_rr", 11111), 1, tmp_path)
    assert closed[0] == "ping-pong" and "--mps" not in closed
    opened = GENERATORS["tcp_rr"].argv(LoadSpec("tcp_rr", 11111, rate_per_s=2500), 1, tmp_path)
    assert opened[:5] == ["under-load", "--reply-every", "1", "--mps", "2500"]
    assert "--full-rtt" in opened


def test_http_at_a_rate_runs_h2load_with_staggered_clients(tmp_path: Path) -> None:
    spec = LoadSpec("http", 8080, path="/x", duration_s=3, rate_per_s=2_500)
    generator = generator_for(spec)
    assert (generator.program, generator.package) == ("h2load", "nghttp2-client")
    assert generator_for(LoadSpec("http", 8080)).program == "wrk"
    argv = generator.argv(spec, 1, tmp_path)
    flag = {name: argv[argv.index(name) + 1] for name in ("-c", "-n", "--rps", "-r", "-t")}
    # 25 clients at 100 req/s each, 3 connecting per ms: all within one 10 ms tick.
    assert flag == {"-c": "25", "-n": "7500", "--rps": "100", "-r": "3", "-t": "1"}
    assert "--h1" in argv and argv[-1] == "http://127.0.0.1:8080/x"
    capped = LoadSpec("http", 8080, duration_s=3, rate_per_s=2_500, max_requests=10)
    argv = generator.argv(capped, 1, tmp_path)
    assert argv[argv.index("-n") + 1] == "10" and argv[argv.index("-c") + 1] == "10"


def test_redis_and_pgbench_argv(tmp_path: Path) -> None:
    redis = GENERATORS["redis"].argv(LoadSpec("redis", 6379, connections=50), 1, tmp_path)
    assert redis[redis.index("-n") + 1] == "100000"  # redis-benchmark's own default count
    assert redis[redis.index("-t") + 1] == "get"
    spec = LoadSpec("pgbench", 5432, connections=4, duration_s=3, rate_per_s=500)
    pgbench = GENERATORS["pgbench"].argv(spec, 1, tmp_path)
    assert pgbench[-1] == "postgres" and "-l" in pgbench
    assert pgbench[pgbench.index("-b") + 1] == "select-only"
    assert pgbench[pgbench.index("-R") + 1] == "500"
    assert pgbench[pgbench.index("-T") + 1] == "3" and "-t" not in pgbench
    counted = LoadSpec("pgbench", 5432, connections=4, max_requests=1000, operation="tpcb-like")
    pgbench = GENERATORS["pgbench"].argv(counted, 1, tmp_path)
    # pgbench refuses -t with -T: the count per client, the duration bounds it from outside.
    assert pgbench[pgbench.index("-t") + 1] == "250" and "-T" not in pgbench
    assert pgbench[pgbench.index("-b") + 1] == "tpcb-like"


def result_of(spec: LoadSpec, requests: int, cpu_s: float, busy: float) -> LoadResult:
    parsed = ParsedLoad(requests=requests, errors=0, duration_s=3.0, bytes_total=0, latency=None)
    run = ChildRun(exit_code=0, wall_s=3.0, cpu_s=cpu_s, killed=False)
    return _result(spec, ("wrk",), parsed, frozenset({1}), run, busy)


@pytest.mark.parametrize(
    ("cpu_s", "busy", "saturated"),
    [
        (2.1, 0.80, False),
        (2.5, 0.96, False),
        (2.8, 0.97, True),
        (1.4, 1.00, True),
        (2.75, 0.90, True),
    ],
)
def test_closed_loop_saturation_rule(cpu_s: float, busy: float, saturated: bool) -> None:
    """Measured: a normal wrk run 0.67-0.70 own CPU, 0.78-0.83 busy; beside a hog 0.46, 1.00."""
    result = result_of(LoadSpec("http", 80, duration_s=3), 100_000, cpu_s, busy)
    assert result.client_saturated is saturated
    assert any("saturated" in warning for warning in result.warnings) is saturated


@pytest.mark.parametrize(("requests", "behind"), [(6_000, False), (5_850, False), (5_700, True)])
def test_open_loop_behind_schedule_rule(requests: int, behind: bool) -> None:
    spec = LoadSpec("tcp_rr", 11111, duration_s=3, rate_per_s=2000)
    result = result_of(spec, requests, 2.9, 1.0)  # sockperf spins: its CPU is no signal
    assert result.client_saturated is behind
    assert any("behind schedule" in warning for warning in result.warnings) is behind


def test_doctor_names_the_package_of_a_missing_generator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.doctor import check_generators

    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no generator is found
    checks = {check.name: check for check in check_generators()}
    assert checks["h2load load"].available is False
    assert checks["h2load load"].fix == "apt-get install nghttp2-client"
    assert checks["wrk load"].fix == "apt-get install wrk"
