"""Parsers of the load generators' outputs: wrk (Lua dump), sockperf, iperf3, redis, pgbench."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import BenchError
from bench.latency import LatencyHistogram

if TYPE_CHECKING:  # numpy itself is imported inside the functions that use it (see latency.py)
    import numpy as np

US_PER_S = 1e6

# Printed by WRK_SCRIPT's done(): the run's totals, then one line per latency bucket.
WRK_SCRIPT = """\
-- args[1]: the most requests one thread may send (bench's hard cap on the load).
local sent, cap, req = 0, 0, nil
init = function(args)
  cap = tonumber(args[1])
  req = wrk.format()
end
request = function()
  sent = sent + 1
  if sent >= cap then wrk.thread:stop() end
  return req
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_SUMMARY duration_us=%d requests=%d bytes=%d "
      .. "connect=%d read=%d write=%d status=%d timeout=%d\\n",
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout))
  for i = 1, #latency do
    local value_us, count = latency(i)
    io.write(string.format("BENCH_LATENCY %d %d\\n", value_us, count))
  end
end
"""


@dataclass(frozen=True)
class ParsedLoad:
    """What one generator run reported, before bench adds the client's CPU figures."""

    requests: int
    errors: int
    duration_s: float
    bytes_total: int
    latency: LatencyHistogram | None
    schedule_lag_max_s: float | None = None


def _fail(tool: str, why: str, text: str) -> BenchError:
    tail = "\n".join(text.strip().splitlines()[-5:])
    return BenchError(f"could not read {tool}'s output ({why}); it ended with:\n{tail}")


def parse_wrk(text: str, connections: int) -> ParsedLoad:
    """wrk 4.1 run with WRK_SCRIPT: totals and the latency histogram as wrk measured it.

    wrk's done() sees its histogram after its coordinated-omission correction, which adds
    synthetic samples (115,410 counts for 108,240 requests in tests/fixtures). The
    correction is invertible, so bench keeps the measured one: one count per request.
    """
    import numpy as np

    match = re.search(r"^BENCH_SUMMARY (.*)$", text, re.MULTILINE)
    if match is None:
        raise _fail("wrk", "no BENCH_SUMMARY line", text)
    fields = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}
    buckets = re.findall(r"^BENCH_LATENCY (\d+) (\d+)$", text, re.MULTILINE)
    values_us = np.array([int(value) for value, _ in buckets], dtype=np.int64)
    counts = np.array([int(count) for _, count in buckets], dtype=np.int64)
    requests = fields["requests"]
    duration_us = fields["duration_us"]
    raw_counts = uncorrect_wrk_counts(
        values_us, counts, _wrk_interval_us(duration_us, requests, connections)
    )
    errors = sum(fields[key] for key in ("connect", "read", "write", "status", "timeout"))
    return ParsedLoad(
        requests=requests,
        errors=errors,
        duration_s=duration_us / US_PER_S,
        bytes_total=fields["bytes"],
        latency=LatencyHistogram.from_counts_us(values_us.tolist(), raw_counts.tolist()),
    )


def _wrk_interval_us(duration_us: int, requests: int, connections: int) -> int:
    """The expected interval wrk's correction used (its integer arithmetic); 0: none applied."""
    per_connection = requests // connections
    return duration_us // per_connection if per_connection > 0 else 0


def uncorrect_wrk_counts(values_us: np.ndarray, counts: np.ndarray, interval_us: int) -> np.ndarray:
    """Undo wrk's stats_correct(): it added every count at v to v-E, v-2E, ... while above E,
    so corrected[v] = raw[v] + corrected[v+E] for v > E."""
    import numpy as np

    if interval_us <= 0 or len(values_us) == 0:
        return counts
    by_value = dict(zip(values_us.tolist(), counts.tolist(), strict=True))
    raw = np.array(
        [
            count - by_value.get(value + interval_us, 0) if value > interval_us else count
            for value, count in by_value.items()
        ],
        dtype=np.int64,
    )
    if (raw < 0).any():
        raise BenchError("wrk's latency histogram is not one its correction produced")
    return raw


_SOCKPERF_VALID = re.compile(
    r"\[Valid Duration\] RunTime=([\d.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)"
)
_SOCKPERF_LOSS = re.compile(r"# dropped messages = (\d+); # duplicated messages = (\d+)")


def parse_sockperf(text: str, full_log: str, rate_per_s: float | None = None) -> ParsedLoad:
    """sockperf ping-pong, or under-load at `rate_per_s` with --reply-every 1, both with
    --full-rtt --full-log: the valid window's counts and each reply's latency.

    Under load, latency counts from the message's slot in the schedule (first send + k/rate):
    sockperf keeps an absolute schedule and catches up after a late send (the fixture: lag
    p50 0, max 1.1 ms), so a late send adds its lag instead of hiding it.
    """
    import numpy as np

    valid = _SOCKPERF_VALID.search(text)
    if valid is None:
        raise _fail("sockperf", "no [Valid Duration] line", text)
    loss = _SOCKPERF_LOSS.search(text)
    log = _sockperf_log(full_log)
    index, sent_s, received_s = log[:, 0], log[:, 1], log[:, 2]
    lag_s = np.zeros_like(sent_s)
    if rate_per_s is not None and len(log):
        lag_s = np.maximum(sent_s - (sent_s[0] + index / rate_per_s), 0.0)
    return ParsedLoad(
        requests=int(valid.group(3)),
        errors=int(loss.group(1)) if loss else 0,
        duration_s=float(valid.group(1)),
        bytes_total=0,
        latency=LatencyHistogram.from_seconds(received_s - sent_s + lag_s),
        schedule_lag_max_s=float(lag_s.max()) if rate_per_s is not None and len(log) else None,
    )


def _sockperf_log(full_log: str) -> np.ndarray:
    """The full log's rows: packet index, send time (s), receive time (s)."""
    import numpy as np

    rows: list[tuple[float, float, float]] = []
    in_table = False
    for line in full_log.splitlines():
        if line.startswith("packet, txTime"):
            in_table = True
        elif in_table:
            parts = line.split(",")
            if len(parts) != 4:
                break
            rows.append((float(parts[0]), float(parts[1]), float(parts[2])))
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def parse_iperf3(text: str) -> ParsedLoad:
    """iperf3 -J: bytes the receiver got and over how long."""
    try:
        report = json.loads(text)
    except ValueError as exc:
        raise _fail("iperf3", f"not JSON: {exc}", text) from exc
    if not isinstance(report, dict) or "error" in report:
        raise _fail(
            "iperf3", str(report.get("error") if isinstance(report, dict) else report), text
        )
    try:
        received = report["end"]["sum_received"]
        seconds, bytes_total = float(received["seconds"]), int(received["bytes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _fail("iperf3", f"no end.sum_received ({exc})", text) from exc
    return ParsedLoad(
        requests=0, errors=0, duration_s=seconds, bytes_total=bytes_total, latency=None
    )


_REDIS_DONE = re.compile(r"(\d+) requests completed in ([\d.]+) seconds")
_REDIS_POINT = re.compile(
    r"^\s*[\d.]+% <= ([\d.]+) milliseconds \(cumulative count (\d+)\)", re.MULTILINE
)


def parse_redis_benchmark(text: str) -> ParsedLoad:
    """redis-benchmark 7 (one test, not -q/--csv): its two cumulative latency tables.

    Each request is counted at the table point at or above its latency, so percentiles read
    back are upper bounds, at most one table step (0.1 ms, or finer near the median) high.
    """
    import numpy as np

    done = _REDIS_DONE.search(text)
    if done is None:
        raise _fail("redis-benchmark", "no 'requests completed' line", text)
    cumulative: dict[int, int] = {}
    for value_ms, count in _REDIS_POINT.findall(text):
        value_ns = round(float(value_ms) * 1e6)
        cumulative[value_ns] = max(cumulative.get(value_ns, 0), int(count))
    values_ns = np.array(sorted(cumulative), dtype=np.int64)
    totals = np.array([cumulative[v] for v in values_ns.tolist()], dtype=np.int64)
    counts = np.diff(np.maximum.accumulate(totals), prepend=0)
    return ParsedLoad(
        requests=int(done.group(1)),
        errors=0,
        duration_s=float(done.group(2)),
        bytes_total=0,
        latency=LatencyHistogram.from_counts_ns(values_ns, counts),
    )


_PGBENCH_DONE = re.compile(r"number of transactions actually processed: (\d+)")
_PGBENCH_FAILED = re.compile(r"number of failed transactions: (\d+)")
_PGBENCH_DURATION = re.compile(r"^duration: (\d+) s", re.MULTILINE)


def parse_pgbench(text: str, logs: list[Path]) -> ParsedLoad:
    """pgbench -l: every transaction's latency (third field, us) from its per-thread logs.

    pgbench counts that latency from the transaction's scheduled start (`now -
    txn_scheduled` in its source), so under --rate the schedule lag is already in it.
    """
    import numpy as np

    done, duration = _PGBENCH_DONE.search(text), _PGBENCH_DURATION.search(text)
    if done is None or duration is None:
        raise _fail("pgbench", "no 'transactions actually processed' line", text)
    failed = _PGBENCH_FAILED.search(text)
    latencies_us: list[int] = []
    for log in logs:
        for line in log.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2].isdigit():
                latencies_us.append(int(fields[2]))  # "skipped"/"failed" lines have no time
    return ParsedLoad(
        requests=int(done.group(1)),
        errors=int(failed.group(1)) if failed else 0,
        duration_s=float(duration.group(1)),
        bytes_total=0,
        latency=LatencyHistogram.from_seconds(np.array(latencies_us, dtype=np.float64) / US_PER_S),
    )


_QUEUE_SUMMARY = re.compile(r"^BENCH_QUEUE (\{.*\})$", re.MULTILINE)


def parse_queue(text: str, latencies_ns: bytes, message_size_bytes: int) -> ParsedLoad:
    """bench/apps/queueapp.py's load role: its summary line and every returned message's
    latency from its slot in the schedule (native int64 ns, one per message).

    requests are the messages sent (the open-loop schedule check counts them); a message
    that did not come back, or came back marked failed by a service, is an error.
    """
    import numpy as np

    match = _QUEUE_SUMMARY.search(text)
    if match is None:
        raise _fail("queueapp load", "no BENCH_QUEUE line", text)
    try:
        summary = json.loads(match.group(1))
        sent, received = int(summary["sent"]), int(summary["received"])
        send_s, lag_s = float(summary["send_s"]), float(summary["schedule_lag_max_s"])
    except (ValueError, KeyError, TypeError):
        raise _fail("queueapp load", "a malformed BENCH_QUEUE line", text) from None
    values_ns = np.frombuffer(latencies_ns, dtype=np.int64)
    if len(values_ns) != received or received > sent:
        raise _fail("queueapp load", f"{len(values_ns)} latencies for {received} of {sent}", text)
    return ParsedLoad(
        requests=sent,
        errors=sent - received,
        duration_s=send_s,
        bytes_total=received * message_size_bytes,
        latency=LatencyHistogram.from_seconds(values_ns / 1e9),
        schedule_lag_max_s=lag_s,
    )


_H2LOAD_FINISHED = re.compile(r"^finished in ([\d.]+)(m?s),", re.MULTILINE)
_H2LOAD_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed",
    re.MULTILINE,
)
_H2LOAD_CODES = re.compile(r"^status codes: \d+ 2xx, \d+ 3xx, (\d+) 4xx, (\d+) 5xx", re.MULTILINE)
_H2LOAD_TRAFFIC = re.compile(r"^traffic: .*?\((\d+)\) total", re.MULTILINE)


def schedule_slot_latencies(
    start_us: np.ndarray, duration_us: np.ndarray, rate_per_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """(latency_s, lag_s) of requests timed from their slot in the aggregate schedule: the
    k-th request by start time is due at first start + k/rate, so a late send adds its lag
    (start - slot, never below 0) to the time its reply took."""
    import numpy as np

    order = np.argsort(start_us, kind="stable")
    since_first_s = (start_us[order] - start_us[order][:1]) / US_PER_S
    slots_s = np.arange(len(order), dtype=np.float64) / rate_per_s
    lag_s = np.maximum(since_first_s - slots_s, 0.0)
    return duration_us[order] / US_PER_S + lag_s, lag_s


def parse_h2load(text: str, log: str, rate_per_s: float) -> ParsedLoad:
    """h2load --h1 at a fixed rate with --log-file: its counts, and each finished request's
    latency from its slot in the schedule (schedule_slot_latencies).

    A log row is start (us since the epoch), HTTP status (-1: failed), us to the end of the
    response. requests are the rows; errors h2load's failed requests and 4xx/5xx replies.
    duration_s is the span of the schedule the requests kept (first to last start plus one
    interval), so a client that fell behind shows fewer requests per second than offered.
    """
    import numpy as np

    done = _H2LOAD_REQUESTS.search(text)
    if done is None or _H2LOAD_FINISHED.search(text) is None:
        raise _fail("h2load", "no 'finished in' and 'requests:' lines", text)
    rows = [line.split("\t") for line in log.splitlines() if line.strip()]
    try:
        if any(len(row) < 3 for row in rows):
            raise ValueError
        table = np.array([[int(field) for field in row[:3]] for row in rows], dtype=np.int64)
    except ValueError:
        raise _fail("h2load", "a malformed --log-file row", log) from None
    table = table.reshape(-1, 3)
    table = table[np.argsort(table[:, 0], kind="stable")]
    # Failed requests (status -1) held their slots too; only answered ones have a latency.
    latency_s, lag_s = schedule_slot_latencies(table[:, 0], table[:, 2], rate_per_s)
    answered = table[:, 1] >= 0
    codes = _H2LOAD_CODES.search(text)
    traffic = _H2LOAD_TRAFFIC.search(text)
    span_s = (table[-1, 0] - table[0, 0]) / US_PER_S + 1 / rate_per_s if len(table) else 0.0
    return ParsedLoad(
        requests=len(table),
        errors=int(done.group(5)) + (int(codes.group(1)) + int(codes.group(2)) if codes else 0),
        duration_s=float(span_s),
        bytes_total=int(traffic.group(1)) if traffic else 0,
        latency=LatencyHistogram.from_seconds(latency_s[answered]),
        schedule_lag_max_s=float(lag_s.max()) if len(lag_s) else None,
    )
