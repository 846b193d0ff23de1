"""The load path's own numbers, side by side in one run (they measure, they do not gate):

- bare-metal nginx throughput through bench's run_load against the same wrk run by hand with
  the same arguments (-t1 -c16, 5 s, client CPU 1, nginx on CPU 0), alternated over 3
  rounds; bench adds its Lua script (request cap, histogram dump). Expected within 5 %.
- bench's own CPU while it drives a 10 s HTTP load and reads the result (target <= 1 % of
  a core): process_time of this process, the generator's CPU being the child's.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import time

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from bench.loadgen import LoadSpec, run_load
from tests.hostservers import CLIENT_CPUS, SERVER_CPUS, nginx_on_host

pytestmark = pytest.mark.benchmark(group="load generator")

ROUNDS = 3
DURATION_S = 5.0
DRIVE_DURATION_S = 10.0
TARGET_RATIO_GAP = 0.05
TARGET_OWN_CPU_SHARE = 0.01


def wrk_by_hand(port: int, target: str) -> float:
    """Requests/s that plain wrk prints for the arguments bench uses."""
    argv = ["taskset", "-c", CLIENT_CPUS, "wrk", "-t1", "-c16", f"-d{DURATION_S:g}s",
            f"http://127.0.0.1:{port}{target}"]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match is not None, out
    return float(match.group(1))


def test_nginx_throughput_bench_against_wrk_by_hand(benchmark: BenchmarkFixture) -> None:
    with nginx_on_host() as nginx:
        spec = LoadSpec(
            "http", nginx.port, path=nginx.target, connections=16, threads=1,
            duration_s=DURATION_S, server_cpus=SERVER_CPUS, client_cpus=CLIENT_CPUS,
        )  # fmt: skip
        by_hand: list[float] = []
        through_bench: list[float] = []

        def one_round() -> None:
            by_hand.append(wrk_by_hand(nginx.port, nginx.target))
            through_bench.append(run_load(spec).requests_per_s)

        benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)  # type: ignore[no-untyped-call]
    hand, ours = statistics.median(by_hand), statistics.median(through_bench)
    benchmark.extra_info.update(
        {
            "wrk_by_hand_requests_per_s": by_hand,
            "bench_run_load_requests_per_s": through_bench,
            "median_ratio": ours / hand,
            "target": f"within {TARGET_RATIO_GAP:.0%}",
        }
    )
    print(f"\nnginx req/s, wrk by hand {by_hand} vs bench {through_bench}: ratio {ours / hand:.3f}")


def test_bench_own_cpu_while_driving_a_10s_load(benchmark: BenchmarkFixture) -> None:
    with nginx_on_host() as nginx:
        spec = LoadSpec("http", nginx.port, path=nginx.target, duration_s=DRIVE_DURATION_S)
        cpu_s: list[float] = []

        def drive() -> None:
            started = time.process_time()
            result = run_load(spec)
            result.latency_summary  # noqa: B018 - reading the percentiles is part of the cost
            cpu_s.append(time.process_time() - started)

        benchmark.pedantic(drive, rounds=1, iterations=1)  # type: ignore[no-untyped-call]
    share = cpu_s[0] / DRIVE_DURATION_S
    benchmark.extra_info.update(
        {"bench_cpu_s": cpu_s[0], "share_of_a_core": share, "target": TARGET_OWN_CPU_SHARE}
    )
    print(f"\nbench's own CPU over a {DRIVE_DURATION_S:g} s load: {cpu_s[0]:.3f} s ({share:.2%})")
