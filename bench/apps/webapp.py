"""app-multitier's app tier: a small WSGI application of bench's own, served by gunicorn.

Runs inside the workload image (Debian's python3, gunicorn, python3-psycopg2 and
python3-redis; no bench import). gunicorn imports it and calls the factory with literals:

  gunicorn 'webapp:create_app(db="127.0.0.1:15432", cache="127.0.0.1:16379",
                              accounts=100000, cached_accounts=1000)'

Endpoints (TechEmpower-style), each answering a small JSON object:
  /json    serialise an object, nothing else
  /db      one SELECT of a random row of pgbench_accounts on the PostgreSQL tier
  /cached  a random row of the first `cached_accounts` from redis (GET); on a miss from
           PostgreSQL, then SET in redis
  /health  SELECT 1 and PING: both data tiers answer (bench's readiness probe)
Each takes `?burn_ms=N`: N ms of busy spinning before the reply (a known CPU cost and delay
that the per-tier tables and the tests look for).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import psycopg2
import redis

PG_USER = "bench"
PG_DATABASE = "postgres"
TIMEOUT_S = 5
SELECT_ACCOUNT = "SELECT aid, bid, abalance FROM pgbench_accounts WHERE aid = %s"
NS_PER_MS = 1_000_000

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def burn(milliseconds: float) -> None:
    """Spin (busy, never sleeping) for `milliseconds` of wall time: the tier's CPU shows it,
    and the reply is late by exactly that even when other work preempts the spin (a CPU-time
    burn took 5.6-11.9 ms for 5 ms on this shared host)."""
    end = time.perf_counter_ns() + int(milliseconds * NS_PER_MS)
    while time.perf_counter_ns() < end:
        pass


class App:
    """The WSGI callable; one PostgreSQL connection per thread, redis-py's pool for redis."""

    def __init__(self, db: str, cache: str, accounts: int, cached_accounts: int) -> None:
        self.db = _address(db)
        self.accounts = accounts
        self.cached_accounts = min(cached_accounts, accounts)
        host, port = _address(cache)
        self.cache = redis.Redis(
            host=host, port=port, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S
        )
        self.local = threading.local()

    def cursor(self) -> Any:
        connection = getattr(self.local, "connection", None)
        if connection is None or connection.closed:
            host, port = self.db
            # No TLS, no GSSAPI: the image has no Kerberos or CA configuration to read.
            connection = psycopg2.connect(
                host=host, port=port, user=PG_USER, dbname=PG_DATABASE,
                sslmode="disable", gssencmode="disable", connect_timeout=TIMEOUT_S,
            )  # fmt: skip
            connection.autocommit = True  # a SELECT holds no transaction open
            self.local.connection = connection
        return connection.cursor()

    def account(self, aid: int) -> dict[str, int]:
        try:
            with self.cursor() as cursor:
                cursor.execute(SELECT_ACCOUNT, (aid,))
                row = cursor.fetchone()
        except psycopg2.OperationalError:
            self.local.connection = None  # reconnects on the next request
            raise
        if row is None:
            raise LookupError(f"no account {aid}")
        return {"aid": row[0], "bid": row[1], "abalance": row[2]}

    def reply(self, path: str) -> dict[str, Any]:
        if path == "/json":
            return {"message": "Hello, World!"}
        if path == "/db":
            return self.account(random.randint(1, self.accounts))
        if path == "/cached":
            aid = random.randint(1, self.cached_accounts)
            key = f"account:{aid}"
            cached = self.cache.get(key)
            if cached is not None:
                return dict(json.loads(cached))
            row = self.account(aid)
            self.cache.set(key, json.dumps(row))
            return row
        if path == "/health":
            with self.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
            return {"db": True, "cache": bool(self.cache.ping())}
        raise KeyError(path)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        try:
            burn_ms = float(query.get("burn_ms", ["0"])[0])
            if burn_ms > 0:
                burn(burn_ms)
            body = json.dumps(self.reply(environ.get("PATH_INFO", "/"))).encode()
            status = "200 OK"
        except KeyError:
            body, status = b'{"error": "not found"}', "404 Not Found"
        except Exception as error:  # the client counts a 5xx as an error
            body = json.dumps({"error": f"{type(error).__name__}: {error}"}).encode()
            status = "500 Internal Server Error"
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        start_response(status, headers)
        return [body]


def create_app(db: str, cache: str, accounts: int, cached_accounts: int) -> App:
    """gunicorn's factory: db and cache as host:port, rows of pgbench_accounts, how many of
    them /cached draws from."""
    return App(db, cache, accounts, cached_accounts)
