"""Multi-tier services: the stack catalogue, their plan, the tiers' params, scenario errors."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from bench.errors import InputError
from bench.plan import build_plan
from bench.scenario import Scenario
from bench.servers import Peer, ServerParams
from bench.service import server_port, server_setup, tier_of
from bench.stacks import STACKS, Stack, Tier, _checked, stack_of


def scenario(**overrides: object) -> Scenario:
    data: dict[str, object] = {
        "name": "t",
        "runtimes": ["bare", "docker"],
        "network_modes": ["host", "bridge"],
        "repetitions": 2,
        "warmups": 0,
        "workloads": [
            {
                "name": "proxied",
                "service": "proxy-static",
                "load": {"duration_s": 2, "path": "/static-1024.bin"},
            }
        ],
    }
    data.update(overrides)
    return Scenario.model_validate(data)


def test_a_stack_is_one_step_with_one_trial_per_tier_in_start_order() -> None:
    steps = build_plan(scenario(), ["bare", "docker"])
    assert [len(step.trials) for step in steps] == [2, 2, 2] * 2
    first = steps[1]
    assert [t.tier for t in first.trials] == ["static", "front"]
    assert [t.trial_id for t in first.trials] == [
        "0001-docker-host-proxied-r0-0-static",
        "0001-docker-host-proxied-r0-1-front",
    ]
    assert {t.group_id for t in first.trials} == {"0001-docker-host-proxied-r0"}
    assert all(t.role == "solo" and t.limits.cpuset for t in first.trials)


def test_a_single_server_stays_one_trial_without_a_tier() -> None:
    single = scenario(workloads=[{"name": "web", "service": "nginx-static"}])
    trials = [t for step in build_plan(single, ["bare"]) for t in step.trials]
    assert [(t.trial_id, t.tier) for t in trials] == [
        ("0000-bare-host-web-r0", ""),
        ("0001-bare-host-web-r1", ""),
    ]
    assert stack_of("nginx-static").tiers == (Tier("", "nginx-static"),)


def test_tiers_get_their_peers_addresses_and_the_front_the_workload_port(tmp_path: Path) -> None:
    workload = scenario(
        workloads=[{"name": "p", "service": "proxy-static", "port": 19000}]
    ).workloads[0]
    static, front = STACKS["proxy-static"].tiers
    assert server_port(workload, static) == 18080  # the kind's default
    assert server_port(workload) == server_port(workload, front) == 19000
    peer = Peer("static", "nginx-static", "172.30.0.2", 18080)
    setup = server_setup(workload, "bridge", tmp_path, front, (peer,))
    conf = setup.files["nginx.conf"].decode()
    assert "server 172.30.0.2:18080;" in conf and "listen 0.0.0.0:19000;" in conf
    assert tier_of(workload) == front and tier_of(workload, "static") == static
    params = ServerParams(1, peers=(peer,))
    assert params.peer("nginx-static") == ("172.30.0.2", 18080)
    with pytest.raises(InputError, match="needs a redis tier"):
        params.peer("redis")


def test_a_tier_may_need_only_tiers_started_before_it() -> None:
    with pytest.raises(ValueError, match="tier 'front' needs \\['back'\\] first"):
        _checked(Stack("x", "", (Tier("front", "nginx-proxy", ("back",)), Tier("back", "redis"))))
    with pytest.raises(ValueError, match="needs"):
        _checked(Stack("x", "", (Tier("a", "redis"), Tier("a", "redis"))))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"network_modes": ["host", "published"]}, "multi-tier service"),
        (
            {"workloads": [{"name": "p", "service": "proxy-static", "port": 18080}]},
            "port 18080 is the port of another tier",
        ),
        (
            {"workloads": [{"name": "p", "service": "proxy-statik"}]},
            "known: .*proxy-static",
        ),
        (
            {"workloads": [{"name": "p", "service": "proxy-static", "load": {"path": "x y"}}]},
            "not an HTTP path",
        ),
    ],
)
def test_scenario_mistakes_about_stacks_are_refused(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        scenario(**overrides)
