"""app-multitier's app tier without a runtime: gunicorn's argv and factory, the peers it is
given, what the image carries for it, and the stack it belongs to."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bench import pyimage
from bench.errors import InputError
from bench.scenario_load import load_scenario, resolve_scenario
from bench.servers import Peer, ServerParams, server_kind
from bench.stacks import STACK_NETWORK_MODES, stack_of
from bench.webappsvc import (
    ACCOUNTS_PER_SCALE,
    APP_FILE,
    APP_SOURCE,
    CACHED_ACCOUNTS,
    PSYCOPG2_EXTENSION,
    WORKERS,
)

PEERS = (
    Peer("db", "postgres", "10.213.4.2", 15432),
    Peer("cache", "redis", "10.213.4.3", 16379),
)


def factory_call(argv: tuple[str, ...]) -> ast.Call:
    """The app argument as gunicorn parses it: module:call with literal arguments only."""
    module, _, call = argv[-1].partition(":")
    assert module == "webapp"
    expression = ast.parse(call, mode="eval").body
    assert isinstance(expression, ast.Call) and isinstance(expression.func, ast.Name)
    return expression


@pytest.mark.parametrize(("network", "host"), [("host", "127.0.0.1"), ("bridge", "0.0.0.0")])
def test_gunicorn_serves_the_app_on_the_trial_address_given_its_peers(
    network: str, host: str, tmp_path: Path
) -> None:
    params = ServerParams(port=18000, network=network, pgbench_scale=3, peers=PEERS)  # type: ignore[arg-type]
    setup = server_kind("webapp").build(params, tmp_path)
    argv = setup.argv
    assert argv[: len(pyimage.PYTHON_ARGV)] == pyimage.PYTHON_ARGV
    assert argv[argv.index("-m") + 1] == "gunicorn"
    assert argv[argv.index("--bind") + 1] == f"{host}:18000"
    assert argv[argv.index("--workers") + 1] == str(WORKERS)
    assert argv[argv.index("--worker-class") + 1] == "gthread"
    call = factory_call(argv)
    kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    assert kwargs == {
        "db": "10.213.4.2:15432",
        "cache": "10.213.4.3:16379",
        "accounts": 3 * ACCOUNTS_PER_SCALE,
        "cached_accounts": CACHED_ACCOUNTS,
    }
    assert setup.files[APP_FILE] == APP_SOURCE.read_bytes()
    assert setup.probe.kind == "http" and setup.probe.path == "/health"
    assert setup.target == "/json" and setup.ports == (18000,)


def test_the_app_tier_refuses_to_start_without_its_data_tiers(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="needs a redis tier"):
        server_kind("webapp").build(ServerParams(port=1, peers=PEERS[:1]), tmp_path)


def test_the_image_gets_gunicorn_psycopg2_with_libpq_and_redis() -> None:
    kind = server_kind("webapp")
    assert not kind.standalone and kind.non_root and kind.client == "http"
    # The extension is a binary of the image: ldd brings libpq and its libraries along.
    assert PSYCOPG2_EXTENSION in kind.binaries and pyimage.PYTHON in kind.binaries
    for package in ("gunicorn", "psycopg2", "redis", "pkg_resources", "packaging"):
        assert pyimage.DIST_PACKAGES / package in kind.data_paths
    assert APP_SOURCE in kind.data_paths  # its hash in the manifest
    assert set(kind.package.split()) == {"gunicorn", "python3-psycopg2", "python3-redis"}


def test_the_webapp_stack_starts_its_data_tiers_first_and_takes_the_load_at_nginx() -> None:
    stack = stack_of("webapp")
    assert [(t.name, t.server, t.needs) for t in stack.tiers] == [
        ("db", "postgres", ()),
        ("cache", "redis", ()),
        ("app", "webapp", ("db", "cache")),
        ("front", "nginx-proxy", ("app",)),
    ]
    assert stack.front.name == "front" and server_kind(stack.front.server).client == "http"


def test_app_multitier_measures_each_endpoint_over_the_stack_paths() -> None:
    scenario = load_scenario(resolve_scenario("app-multitier"))
    assert {w.service for w in scenario.workloads} == {"webapp"}
    paths = [w.load.path if w.load else None for w in scenario.workloads]
    assert paths == ["/json", "/db", "/cached"]
    assert set(scenario.network_modes) <= set(STACK_NETWORK_MODES)
    assert scenario.quick is not None and scenario.quick.repetitions == 1
