"""app-queue's pieces without a runtime: the client's output parser, its load kind's guards
and saturation rule, the broker's config, the Python files of the image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import pyimage
from bench.clientproc import ChildRun
from bench.errors import BenchError, InputError
from bench.image import _data_files
from bench.latency import RELATIVE_PRECISION
from bench.loadgen import GENERATORS, _result
from bench.loadparse import ParsedLoad, parse_queue
from bench.loadspec import LoadSpec
from bench.queuesvc import APP_FILE, APP_SOURCE, BROKER_KIND, PRICING_KIND, mosquitto
from bench.servers import Peer, ServerParams, server_kind
from bench.stacks import Stack, _checked, stack_of

PEERS = (
    Peer("broker", BROKER_KIND, "127.0.0.1", 11883),
    Peer("pricing", PRICING_KIND, "127.0.0.1", 18091),
)


def queue_output(sent: int, received: int, send_s: float = 3.0) -> str:
    summary = {
        "sent": sent,
        "received": received,
        "failed": 0,
        "send_s": send_s,
        "schedule_lag_max_s": 0.0012,
        "probes": 2,
    }
    return "some warning\nBENCH_QUEUE " + json.dumps(summary) + "\n"


def test_queue_parser_keeps_every_returned_message_and_counts_the_rest_as_errors() -> None:
    rng = np.random.default_rng(7)
    latencies_ns = rng.lognormal(np.log(400e3), 0.6, size=3_000).astype(np.int64)
    parsed = parse_queue(queue_output(3_010, 3_000), latencies_ns.tobytes(), 64)
    assert (parsed.requests, parsed.errors) == (3_010, 10)
    assert parsed.duration_s == 3.0 and parsed.schedule_lag_max_s == 0.0012
    assert parsed.bytes_total == 3_000 * 64
    assert parsed.latency is not None and parsed.latency.count == 3_000
    for percentile in (50.0, 99.0):
        exact_s = float(np.percentile(latencies_ns, percentile, method="inverted_cdf")) / 1e9
        measured_s = parsed.latency.percentile_s(percentile)
        assert measured_s == pytest.approx(exact_s, rel=2 * RELATIVE_PRECISION)


@pytest.mark.parametrize(
    ("text", "latencies", "message"),
    [
        ("Traceback ...\n", b"", "no BENCH_QUEUE line"),
        ('BENCH_QUEUE {"sent": 3}\n', b"", "malformed"),
        (queue_output(10, 5), np.zeros(4, dtype=np.int64).tobytes(), "4 latencies for 5"),
    ],
)
def test_queue_parser_refuses_output_it_cannot_trust(
    text: str, latencies: bytes, message: str
) -> None:
    with pytest.raises(BenchError, match=message):
        parse_queue(text, latencies, 64)


def test_mqtt_load_is_open_loop_only_and_its_argv_is_a_list(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"fixed offered rates only: give load\.rate_per_s"):
        LoadSpec("mqtt", 11883)
    spec = LoadSpec("mqtt", 11883, rate_per_s=500, duration_s=3, max_requests=1_000)
    argv = GENERATORS["mqtt"].argv(spec, 1, tmp_path)
    assert argv[:2] == ["-I", "-B"] and str(APP_SOURCE) in argv  # after the interpreter
    assert argv[argv.index("--broker") + 1] == "127.0.0.1:11883"
    assert argv[argv.index("--rate") + 1] == "500"
    assert argv[argv.index("--duration") + 1] == "3"
    assert argv[argv.index("--max") + 1] == "1000"
    with pytest.raises(InputError, match=r"only to 127\.0\.0\.1"):
        LoadSpec("mqtt", 11883, host="10.1.2.3", rate_per_s=500)


def mqtt_result(sent: int, cpu_s: float, busy: float) -> bool:
    spec = LoadSpec("mqtt", 11883, duration_s=3, rate_per_s=1000)
    parsed = ParsedLoad(requests=sent, errors=0, duration_s=3.0, bytes_total=0, latency=None)
    run = ChildRun(exit_code=0, wall_s=3.5, cpu_s=cpu_s, killed=False)
    return _result(spec, ("python3",), parsed, frozenset({1}), run, busy, True).client_saturated


@pytest.mark.parametrize(
    ("sent", "cpu_s", "busy", "saturated"),
    [
        (3_000, 0.7, 0.30, False),  # measured here: 0.42+0.19 s of CPU for 1,000 msg/s, 3 s
        (2_800, 0.7, 0.30, True),  # behind its schedule (3 sigma: 164 of 3,000)
        (3_000, 3.3, 0.97, True),  # on schedule, but its own CPU had no room left
        (3_000, 0.7, 1.00, True),  # its CPU taken by other work: late receive times
    ],
)
def test_mqtt_client_saturation_rule(sent: int, cpu_s: float, busy: float, saturated: bool) -> None:
    assert mqtt_result(sent, cpu_s, busy) is saturated


@pytest.mark.parametrize("network", ["host", "bridge"])
def test_mosquitto_listens_on_the_trial_address_without_nagle_or_persistence(
    network: str, tmp_path: Path
) -> None:
    setup = mosquitto(ServerParams(port=23456, network=network), tmp_path)  # type: ignore[arg-type]
    conf = setup.files["mosquitto.conf"].decode().splitlines()
    host = "127.0.0.1" if network == "host" else "0.0.0.0"
    assert f"listener 23456 {host}" in conf
    assert {"set_tcp_nodelay true", "persistence false", "allow_anonymous true"} <= set(conf)
    assert setup.argv[0] == "/usr/sbin/mosquitto" and setup.ports == (23456,)
    assert server_kind("mosquitto").non_root  # as root it would switch to a user


def test_the_image_gets_pythons_stdlib_and_paho_but_no_bytecode_caches(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "mod.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    assert _data_files(tmp_path / "pkg") == [tmp_path / "pkg" / "mod.py"]
    kind = server_kind("queue-orders")
    assert pyimage.PYTHON in kind.binaries
    assert pyimage.DIST_PACKAGES / "paho" in kind.data_paths
    assert APP_SOURCE in kind.data_paths  # its hash in the manifest
    setup = kind.build(ServerParams(port=1, peers=PEERS), tmp_path)
    assert setup.files[APP_FILE] == APP_SOURCE.read_bytes()  # the same bytes in the io dir
    skipped = {pyimage.STDLIB / "config-3.11-x86_64-linux-gnu", pyimage.STDLIB / "test"}
    assert not skipped & set(kind.data_paths)
    if pyimage.STDLIB.is_dir():
        assert pyimage.STDLIB / "http" in kind.data_paths


def test_the_queue_stack_starts_the_broker_first_and_takes_the_load_there() -> None:
    stack = stack_of("queue")
    assert [tier.server for tier in stack.tiers] == ["mosquitto", "queue-pricing", "queue-orders"]
    assert stack.front.name == "broker"  # the client publishes and receives at the broker
    assert server_kind(stack.front.server).client == "mqtt"
    with pytest.raises(ValueError, match="entry 'gateway' is none of its tiers"):
        _checked(Stack("x", "", stack.tiers, entry="gateway"))
