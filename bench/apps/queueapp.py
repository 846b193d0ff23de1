"""Two microservices and their load client around an MQTT broker (bench's app-queue).

Runs inside the workload image (Debian's python3 and python3-paho-mqtt, no bench import) and,
for the `load` role, on the host. A message's path, every hop at QoS 0:

  load --bench/orders--> broker --> orders --HTTP GET /price/<k>--> pricing
  orders --bench/priced--> broker --> pricing --bench/done--> broker --> load

`load` publishes on an absolute schedule (open loop: message k is due at t0 + k/rate,
whatever the replies do) and times each returning message from its slot, so a late send or
a queue anywhere adds to the latency instead of hiding it. Before the schedule starts it
sends probe messages until one has made the whole trip (every service subscribed).
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import threading
import time
from array import array
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import paho.mqtt.client as mqtt

TOPIC_ORDERS = "bench/orders"
TOPIC_PRICED = "bench/priced"
TOPIC_DONE = "bench/done"
PROBE_PREFIX = b"p"
FAILED_PREFIX = b"!"
PROBE_EVERY_S = 0.05
READY_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 5.0
NS_PER_S = 1_000_000_000


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _client(name: str, broker: tuple[str, int], topics: list[str]) -> mqtt.Client:
    """A connected client that (re)subscribes to `topics` on every connect."""
    client = mqtt.Client(client_id=f"bench-{name}", clean_session=True)

    def on_connect(client: mqtt.Client, _userdata: object, _flags: object, rc: int) -> None:
        if rc != 0:
            sys.exit(f"{name}: broker refused the connection (rc {rc})")
        # paho leaves Nagle's algorithm on: a small message then waits for the previous
        # one's ACK (tens of ms under delayed ACKs) instead of leaving at once.
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for topic in topics:
            client.subscribe(topic, qos=0)

    client.on_connect = on_connect
    client.connect(*broker, keepalive=60)
    return client


def orders(args: argparse.Namespace) -> None:
    """Consumes an order, asks pricing for its price over HTTP, publishes it as priced."""
    host, port = _address(args.pricing)
    connection = http.client.HTTPConnection(host, port, timeout=HTTP_TIMEOUT_S)
    client = _client("orders", _address(args.broker), [TOPIC_ORDERS])

    def on_message(client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        payload = message.payload
        key = payload.split(b" ", 1)[0].decode()
        try:
            connection.request("GET", f"/price/{key}")
            response = connection.getresponse()
            body = response.read()
            ok = response.status == 200 and body.startswith(b"{")
        except (OSError, http.client.HTTPException):
            connection.close()  # reconnects on the next request
            ok = False
        client.publish(TOPIC_PRICED, payload if ok else FAILED_PREFIX + payload, qos=0)

    client.on_message = on_message
    ready: list[socket.socket] = []

    def on_subscribe(_client: mqtt.Client, _userdata: object, _mid: int, _qos: object) -> None:
        # Subscribed: listen on the ready port, which bench's probe looks for (no accept).
        if not ready:
            ready.append(socket.create_server(_address(args.ready)))

    client.on_subscribe = on_subscribe
    client.loop_forever()


class _PriceHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: orders reuses one connection
    disable_nagle_algorithm = True
    delay_s = 0.0  # added to every price lookup (a known delay the tests look for)

    def do_GET(self) -> None:  # http.server calls it by this name
        key = self.path.rpartition("/")[2]
        if self.path == "/health":
            body = b'{"ok": true}'
        elif self.path.startswith("/price/") and key:
            if self.delay_s:
                time.sleep(self.delay_s)
            body = json.dumps({"key": key, "price_cents": 100 + len(key)}).encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would cost more than the request


def pricing(args: argparse.Namespace) -> None:
    """Answers price lookups over HTTP; forwards each priced order as done."""
    client = _client("pricing", _address(args.broker), [TOPIC_PRICED])

    def on_message(client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        client.publish(TOPIC_DONE, message.payload, qos=0)

    client.on_message = on_message
    client.loop_start()
    _PriceHandler.delay_s = args.delay_ms / 1000
    server = ThreadingHTTPServer(_address(args.listen), _PriceHandler)
    server.daemon_threads = True
    server.serve_forever()


class _Receiver:
    """The load client's returning messages: latency from each one's slot, in ns."""

    def __init__(self) -> None:
        self.t0_ns = 0
        self.period_ns = 0.0
        self.latencies_ns = array("q")
        self.failed = 0
        self.probe_seen = threading.Event()

    def on_message(
        self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage
    ) -> None:
        now = time.monotonic_ns()
        payload = message.payload
        if payload.startswith(PROBE_PREFIX):
            self.probe_seen.set()
            return
        if payload.startswith(FAILED_PREFIX):
            self.failed += 1
            return
        key = int(payload.split(b" ", 1)[0])
        self.latencies_ns.append(now - self.t0_ns - int(key * self.period_ns))


def _payload(key: str, size_bytes: int) -> bytes:
    head = key.encode() + b" "
    return head + b"x" * max(0, size_bytes - len(head))


def load(args: argparse.Namespace) -> None:
    """Open loop at args.rate msg/s for args.duration s (at most args.max messages)."""
    receiver = _Receiver()
    client = _client("load", _address(args.broker), [TOPIC_DONE])
    client.on_message = receiver.on_message
    client.loop_start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    probe = 0
    while not receiver.probe_seen.wait(PROBE_EVERY_S):
        if time.monotonic() > deadline:
            sys.exit(f"load: no probe came back through the services in {READY_TIMEOUT_S:g} s")
        client.publish(TOPIC_ORDERS, _payload(f"p{probe}", args.size), qos=0)
        probe += 1
    time.sleep(args.settle)  # probes still on their way come back before t0
    total = min(int(args.rate * args.duration), args.max)
    period_ns = NS_PER_S / args.rate
    payloads = [_payload(str(key), args.size) for key in range(total)]
    receiver.period_ns = period_ns
    t0 = receiver.t0_ns = time.monotonic_ns()
    end = t0 + int(args.duration * NS_PER_S)
    sent, lag_max_ns = 0, 0
    for key in range(total):
        due = t0 + int(key * period_ns)
        now = time.monotonic_ns()
        if now > end:
            break  # behind schedule: what was not sent by the end is reported as not sent
        if due > now:
            time.sleep((due - now) / NS_PER_S)
            now = time.monotonic_ns()
        lag_max_ns = max(lag_max_ns, now - due)
        client.publish(TOPIC_ORDERS, payloads[key], qos=0)
        sent += 1
    send_s = (time.monotonic_ns() - t0) / NS_PER_S
    drain_until = time.monotonic() + args.drain
    while len(receiver.latencies_ns) + receiver.failed < sent and time.monotonic() < drain_until:
        time.sleep(0.01)
    client.loop_stop()
    client.disconnect()
    with open(args.out, "wb") as sink:
        receiver.latencies_ns.tofile(sink)
    summary = {
        "sent": sent,
        "received": len(receiver.latencies_ns),
        "failed": receiver.failed,
        "send_s": send_s,
        "schedule_lag_max_s": lag_max_ns / NS_PER_S,
        "probes": probe,
    }
    print("BENCH_QUEUE " + json.dumps(summary, sort_keys=True), flush=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    roles = parser.add_subparsers(dest="role", required=True)
    for role in ("orders", "pricing", "load"):
        sub = roles.add_parser(role)
        sub.add_argument("--broker", required=True, help="host:port of the MQTT broker")
    roles.choices["orders"].add_argument("--pricing", required=True, help="host:port")
    roles.choices["orders"].add_argument("--ready", required=True, help="host:port to listen on")
    roles.choices["pricing"].add_argument("--listen", required=True, help="host:port")
    roles.choices["pricing"].add_argument("--delay-ms", type=float, default=0.0)
    loader = roles.choices["load"]
    loader.add_argument("--rate", type=float, required=True, help="messages per second")
    loader.add_argument("--duration", type=float, required=True, help="seconds")
    loader.add_argument("--max", type=int, required=True, help="at most this many messages")
    loader.add_argument("--size", type=int, default=64, help="payload bytes")
    loader.add_argument("--settle", type=float, default=0.2, help="seconds after the probe")
    loader.add_argument("--drain", type=float, default=3.0, help="seconds to wait for replies")
    loader.add_argument("--out", required=True, help="file for the latencies (int64 ns)")
    args = parser.parse_args(argv)
    {"orders": orders, "pricing": pricing, "load": load}[args.role](args)


if __name__ == "__main__":
    main(sys.argv[1:])
