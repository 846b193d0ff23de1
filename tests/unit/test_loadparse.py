"""Load generator parsers on captured real outputs (tests/fixtures/loadgen, this host)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from bench.errors import BenchError
from bench.latency import RELATIVE_PRECISION
from bench.loadparse import (
    parse_h2load,
    parse_iperf3,
    parse_pgbench,
    parse_redis_benchmark,
    parse_sockperf,
    parse_wrk,
    schedule_slot_latencies,
    uncorrect_wrk_counts,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "loadgen"
# wrk -t1 -c16 -d2s -s <WRK_SCRIPT> against nginx on 127.0.0.1.
WRK_CONNECTIONS = 16


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def wrk_dump() -> tuple[np.ndarray, np.ndarray]:
    pairs = re.findall(r"^BENCH_LATENCY (\d+) (\d+)$", fixture("wrk-dump.txt"), re.MULTILINE)
    return np.array([int(v) for v, _ in pairs]), np.array([int(c) for _, c in pairs])


def wrk_stats_correct(values_us: np.ndarray, counts: np.ndarray, interval_us: int) -> np.ndarray:
    """wrk 4.1's stats_correct(), transcribed: the forward correction bench undoes."""
    data = dict(zip(values_us.tolist(), counts.tolist(), strict=True))
    top = max(data)
    corrected = dict(data)
    for n in range(2 * interval_us, top + 1):
        count, m = data.get(n, 0), n - interval_us
        while count and m > interval_us:
            corrected[m] = corrected.get(m, 0) + count
            m -= interval_us
    return np.array([corrected.get(v, 0) for v in values_us.tolist()])


def test_wrk_histogram_counts_each_request_once() -> None:
    parsed = parse_wrk(fixture("wrk-dump.txt"), WRK_CONNECTIONS)
    text = fixture("wrk-dump.txt")
    printed = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    assert parsed.requests == printed
    assert parsed.errors == 0
    assert parsed.duration_s == pytest.approx(2.00463)
    assert parsed.bytes_total > parsed.requests * 1024  # a 1 KiB body plus headers each
    assert parsed.latency is not None
    _, dumped = wrk_dump()
    assert dumped.sum() > parsed.requests  # wrk's correction added samples...
    assert parsed.latency.count == parsed.requests  # ...which bench removed again
    summary = parsed.latency.summary()
    assert 0 < summary.min_s <= summary.p50_s <= summary.p90_s <= summary.p99_s <= summary.max_s
    # wrk printed "Latency 367.04us" as its (corrected) mean: the measured one is lower.
    assert 100e-6 < summary.mean_s < 367.04e-6


def test_wrk_uncorrection_is_the_exact_inverse() -> None:
    values_us, dumped = wrk_dump()
    interval_us = 2004630 // (108240 // WRK_CONNECTIONS)
    raw = uncorrect_wrk_counts(values_us, dumped, interval_us)
    assert (raw >= 0).all()
    assert np.array_equal(wrk_stats_correct(values_us, raw, interval_us), dumped)


def test_wrk_output_that_correction_cannot_produce_is_rejected() -> None:
    with pytest.raises(BenchError, match="not one its correction produced"):
        uncorrect_wrk_counts(np.array([400, 700]), np.array([1, 5]), 300)


def test_wrk_without_the_summary_line_is_a_clear_error() -> None:
    with pytest.raises(BenchError, match=r"(?s)no BENCH_SUMMARY line.*unable to connect"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n", WRK_CONNECTIONS)


def sockperf_printed_percentiles_us(text: str) -> dict[float, float]:
    found = re.findall(r"percentile (\d+\.\d+) = +([\d.]+)", text)
    return {float(p): float(v) for p, v in found}


@pytest.mark.parametrize("mode", ["ping-pong", "under-load"])
def test_sockperf_full_log_agrees_with_its_own_percentiles(mode: str) -> None:
    text = fixture(f"sockperf-{mode}.txt")
    parsed = parse_sockperf(text, fixture(f"sockperf-{mode}-full-log.csv"))
    valid = re.search(r"\[Valid Duration\] RunTime=([\d.]+) sec.*ReceivedMessages=(\d+)", text)
    assert valid is not None
    assert parsed.requests == int(valid.group(2))
    assert parsed.duration_s == float(valid.group(1))
    assert parsed.latency is not None and parsed.latency.count == parsed.requests
    printed = sockperf_printed_percentiles_us(text)
    for percentile in (25.0, 50.0, 75.0, 90.0):
        ours = parsed.latency.percentile_s(percentile) * 1e6
        # Same samples, timed from the send; sockperf picks its rank a little differently.
        assert ours == pytest.approx(printed[percentile], rel=0.01), percentile


def test_sockperf_latency_from_schedule_adds_the_lag() -> None:
    text = fixture("sockperf-under-load.txt")
    log = fixture("sockperf-under-load-full-log.csv")
    from_schedule = parse_sockperf(text, log, 2000.0).latency
    from_send = parse_sockperf(text, log, None).latency
    assert from_schedule is not None and from_send is not None
    assert from_schedule.count == from_send.count
    assert from_schedule.percentile_s(99.9) >= from_send.percentile_s(99.9)
    assert from_schedule.summary().mean_s > from_send.summary().mean_s
    lag_max_s = parse_sockperf(text, log, 2000.0).schedule_lag_max_s
    assert lag_max_s is not None and 0 < lag_max_s < 0.01  # 1.1 ms in this capture


def test_sockperf_without_a_valid_window_is_a_clear_error() -> None:
    with pytest.raises(BenchError, match=r"no \[Valid Duration\] line"):
        parse_sockperf("sockperf: ERROR: connect failed\n", "")


def test_iperf3_bytes_and_seconds() -> None:
    parsed = parse_iperf3(fixture("iperf3.json"))
    assert parsed.bytes_total == 5827461120
    assert parsed.duration_s == pytest.approx(2.000226)
    assert parsed.latency is None
    assert parsed.bytes_total / parsed.duration_s * 8 == pytest.approx(
        23307210765.18, rel=RELATIVE_PRECISION
    )


def test_iperf3_error_is_reported_with_its_reason() -> None:
    with pytest.raises(BenchError, match="unable to connect to server: Connection refused"):
        parse_iperf3(fixture("iperf3-refused.json"))
    with pytest.raises(BenchError, match="not JSON"):
        parse_iperf3("iperf3: error - unable to connect\n")


def test_redis_benchmark_tables_give_every_request() -> None:
    text = fixture("redis-benchmark-get.txt")
    parsed = parse_redis_benchmark(text)
    done = re.search(r"(\d+) requests completed in ([\d.]+) seconds", text)
    assert done is not None
    assert parsed.requests == int(done.group(1)) and parsed.duration_s == float(done.group(2))
    assert parsed.latency is not None and parsed.latency.count == parsed.requests
    numbers = r"\s+([\d.]+)" * 6
    summary = re.search(
        r"latency summary \(msec\):\s+avg\s+min\s+p50\s+p95\s+p99\s+max" + numbers, text
    )
    assert summary is not None
    printed_p50_s, printed_p99_s = float(summary.group(3)) / 1e3, float(summary.group(5)) / 1e3
    points_s = sorted(float(v) / 1e3 for v in re.findall(r"<= ([\d.]+) milliseconds", text))
    for percentile, printed_s in ((50, printed_p50_s), (99, printed_p99_s)):
        # Counted at the table point at or above each latency: an upper bound, one step high.
        step_above_s = min(point for point in points_s if point >= printed_s)
        ours = parsed.latency.percentile_s(percentile)
        assert printed_s * (1 - RELATIVE_PRECISION) <= ours, percentile
        assert ours <= step_above_s * (1 + RELATIVE_PRECISION), percentile


def test_redis_benchmark_without_a_result_is_a_clear_error() -> None:
    with pytest.raises(BenchError, match="no 'requests completed' line"):
        parse_redis_benchmark("Could not connect to Redis at 127.0.0.1:1: Connection refused\n")


@pytest.mark.parametrize("mode", ["closed", "rate"])
def test_pgbench_transaction_logs(mode: str, tmp_path: Path) -> None:
    text = fixture(f"pgbench-{mode}.txt")
    log = tmp_path / "txlog.1234"
    log.write_text(fixture(f"pgbench-{mode}-txlog.txt"))
    parsed = parse_pgbench(text, [log])
    processed = re.search(r"number of transactions actually processed: (\d+)", text)
    assert processed is not None and parsed.requests == int(processed.group(1))
    assert parsed.duration_s == 2 and parsed.errors == 0
    assert parsed.latency is not None and parsed.latency.count == parsed.requests
    average = re.search(r"latency average = ([\d.]+) ms", text)
    assert average is not None
    average_s, mean_s = float(average.group(1)) / 1e3, parsed.latency.summary().mean_s
    if mode == "rate":
        # Throttled, pgbench prints the mean of the same logged latencies (from the schedule).
        assert mean_s == pytest.approx(average_s, rel=0.01)
    else:
        # Unthrottled it prints duration x clients / transactions, which adds the clients'
        # own time between transactions (314 us against the logs' 310 us here).
        assert average_s * 0.9 < mean_s <= average_s


def test_pgbench_without_a_result_is_a_clear_error() -> None:
    with pytest.raises(BenchError, match="no 'transactions actually processed' line"):
        parse_pgbench("pgbench: error: connection to server failed: Connection refused\n", [])


def test_schedule_slot_latency_adds_a_late_send_s_lag() -> None:
    """At 1,000 req/s the slots are 1 ms apart from the first start: the third request, sent
    0.5 ms after its slot, counts that lag; the fourth, sent early, only its own time."""
    start_us = np.array(
        [1_000_000_002_500, 1_000_000_000_000, 1_000_000_001_000, 1_000_000_002_600]
    )
    duration_us = np.array([300, 100, 200, 400])
    latency_s, lag_s = schedule_slot_latencies(start_us, duration_us, 1000.0)
    assert latency_s * 1e6 == pytest.approx([100, 200, 800, 400])
    assert lag_s * 1e6 == pytest.approx([0, 0, 500, 0])


def test_h2load_log_timed_from_the_schedule() -> None:
    """h2load --h1 at 500 req/s for 1 s (bench's argv): every request in the histogram once,
    timed from its slot, so never below h2load's own time from the send."""
    text, log = fixture("h2load-rate.txt"), fixture("h2load-rate-log.tsv")
    parsed = parse_h2load(text, log, 500.0)
    assert parsed.requests == 500 and parsed.errors == 0
    assert parsed.duration_s == pytest.approx(1.0, rel=0.03)
    assert parsed.bytes_total == 639_000
    assert parsed.latency is not None and parsed.latency.count == 500
    from_send_s = np.array([int(row.split("\t")[2]) for row in log.splitlines()]) / 1e6
    summary = parsed.latency.summary()
    assert summary.max_s >= from_send_s.max() * (1 - RELATIVE_PRECISION)
    assert summary.p50_s >= np.percentile(from_send_s, 50) * (1 - RELATIVE_PRECISION)
    assert parsed.schedule_lag_max_s is not None and parsed.schedule_lag_max_s >= 0


def test_h2load_failed_requests_are_errors_without_a_latency() -> None:
    text = (
        "finished in 1.00s, 3.00 req/s, 1KB/s\n"
        "requests: 3 total, 3 started, 3 done, 2 succeeded, 1 failed, 1 errored, 0 timeout\n"
        "status codes: 1 2xx, 0 3xx, 0 4xx, 1 5xx\n"
    )
    log = "1000000\t200\t50\n1001000\t-1\t70\n1002000\t503\t60\n"
    parsed = parse_h2load(text, log, 1000.0)
    assert parsed.requests == 3 and parsed.errors == 2  # the failed one and the 503
    assert parsed.latency is not None and parsed.latency.count == 2
    with pytest.raises(BenchError, match="no 'finished in'"):
        parse_h2load("h2load: connection refused\n", "", 1000.0)
