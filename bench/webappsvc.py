"""app-multitier's app tier: bench/apps/webapp.py served by gunicorn from Debian, on
Debian's python3 in the image, reaching the postgres and redis tiers it needs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bench.probes import Probe
from bench.pyimage import DIST_PACKAGES, PYTHON_ARGV

if TYPE_CHECKING:
    from bench.servers import ServerParams, ServerSetup

APP_SOURCE = (Path(__file__).parent / "apps" / "webapp.py").resolve()
# Run from the io dir's copy (readable by nobody whatever the checkout's permissions); the
# image carries the source too, so the manifest hashes it.
APP_FILE = "webapp.py"
# What gunicorn, psycopg2 and redis-py import from dist-packages (measured with -I).
PACKAGES = ("gunicorn", "pkg_resources", "psycopg2", "redis", "packaging")
# psycopg2's extension: a binary of the image, so that libpq and its libraries come along.
PSYCOPG2_EXTENSION = DIST_PACKAGES / "psycopg2" / "_psycopg.cpython-311-x86_64-linux-gnu.so"
# Two worker processes of two threads: a request waiting on PostgreSQL or redis leaves the
# other thread to run; gthread also keeps the client's connections alive (sync does not).
WORKERS = 2
THREADS = 2
ACCOUNTS_PER_SCALE = 100_000  # pgbench_accounts rows per unit of pgbench's scale
# /cached draws from the first accounts only, so that a short run soon hits its cache
# (TechEmpower's cached query uses 10,000 items; a 2 s quick run serves fewer requests).
CACHED_ACCOUNTS = 1000
POSTGRES_KIND = "postgres"
REDIS_KIND = "redis"


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def webapp(params: ServerParams, _state_dir: Path) -> ServerSetup:
    """gunicorn (gthread workers) serving the app's /json, /db and /cached on its port."""
    from bench.servers import ServerSetup

    db = _address(*params.peer(POSTGRES_KIND))
    cache = _address(*params.peer(REDIS_KIND))
    accounts = params.pgbench_scale * ACCOUNTS_PER_SCALE
    factory = (
        f"webapp:create_app(db={db!r}, cache={cache!r}, accounts={accounts}, "
        f"cached_accounts={CACHED_ACCOUNTS})"
    )
    gunicorn = (
        *("-m", "gunicorn", "--bind", _address(params.listen_host, params.port)),
        *("--workers", str(WORKERS), "--worker-class", "gthread", "--threads", str(THREADS)),
        # -I keeps the io dir off sys.path; the heartbeat files go there, not to /tmp.
        *("--pythonpath", ".", "--worker-tmp-dir", "."),
        *("--log-level", "warning", "--error-logfile", "-"),
    )
    return ServerSetup(
        argv=(*PYTHON_ARGV, *gunicorn, factory),
        files={APP_FILE: APP_SOURCE.read_bytes()},
        ports=(params.port,),
        probe=Probe("http", path="/health"),
        target="/json",
    )
