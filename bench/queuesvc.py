"""app-queue's servers: an MQTT broker (Debian's mosquitto) and two microservices of bench's
own (bench/apps/queueapp.py on Debian's python3 and python3-paho-mqtt).

orders consumes each order from the broker, asks pricing for its price over HTTP REST and
publishes it as priced; pricing answers the price lookups and forwards each priced order as
done. The message path and the open-loop client are described in bench/apps/queueapp.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bench.loadspec import MAX_REQUESTS
from bench.probes import Probe
from bench.pyimage import PYTHON_ARGV

if TYPE_CHECKING:
    from bench.loadspec import LoadSpec
    from bench.servers import ServerParams, ServerSetup

MOSQUITTO = Path("/usr/sbin/mosquitto")
APP_SOURCE = (Path(__file__).parent / "apps" / "queueapp.py").resolve()
# The services run the copy in their io dir: readable by their user (nobody) on bare metal
# too, whatever the permissions of bench's checkout. The image carries the source as well,
# so the manifest holds its hash beside the interpreter's and paho's.
APP_FILE = "queueapp.py"
BROKER_KIND = "mosquitto"
PRICING_KIND = "queue-pricing"


def _lines(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def mosquitto(params: ServerParams, _state_dir: Path) -> ServerSetup:
    """mosquitto in the foreground: anonymous clients, no persistence, errors on stderr."""
    from bench.servers import ServerSetup

    conf = _lines(
        f"listener {params.port} {params.listen_host}",
        "allow_anonymous true",
        "persistence false",
        # Nagle's algorithm would hold each small message until the previous one's ACK.
        "set_tcp_nodelay true",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
    )
    return ServerSetup(
        argv=(str(MOSQUITTO), "-c", "mosquitto.conf"),
        files={"mosquitto.conf": conf},
        ports=(params.port,),
        probe=Probe("tcp"),
    )


def _app(params: ServerParams, role: str, *options: str) -> ServerSetup:
    from bench.servers import ServerSetup

    broker = _address(*params.peer(BROKER_KIND))
    return ServerSetup(
        argv=(*PYTHON_ARGV, APP_FILE, role, "--broker", broker, *options),
        files={APP_FILE: APP_SOURCE.read_bytes()},
        ports=(params.port,),
        # pricing answers HTTP; orders listens on its port once it has subscribed.
        probe=Probe("http", path="/health") if role == "pricing" else Probe("listen"),
    )


def queue_pricing(params: ServerParams, _state_dir: Path) -> ServerSetup:
    """app-queue's pricing service: HTTP price lookups; forwards each priced order as done."""
    return _app(params, "pricing", "--listen", _address(params.listen_host, params.port))


def queue_orders(params: ServerParams, _state_dir: Path) -> ServerSetup:
    """app-queue's orders service: asks pricing over HTTP, publishes each order as priced."""
    pricing = _address(*params.peer(PRICING_KIND))
    ready = _address(params.listen_host, params.port)
    return _app(params, "orders", "--pricing", pricing, "--ready", ready)


def load_argv(spec: LoadSpec, latencies: Path) -> list[str]:
    """The open-loop client on the host: Debian's python3 running the app's load role
    against the broker at the spec's host:port; each message's latency goes to `latencies`."""
    assert spec.rate_per_s is not None
    return [
        *PYTHON_ARGV,
        *(str(APP_SOURCE), "load", "--broker", _address(spec.host, spec.port)),
        *("--rate", f"{spec.rate_per_s:g}", "--duration", str(round(spec.duration_s))),
        *("--max", str(spec.max_requests or MAX_REQUESTS)),
        *("--size", str(spec.message_size_bytes), "--out", str(latencies)),
    ]
