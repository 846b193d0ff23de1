"""The network path as an axis: plan expansion, skipped modes, labels, and scenario errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bench.analysis import default_baseline, label_order
from bench.frames import _add_labels
from bench.plan import build_plan
from bench.report.markdown import baseline_title
from bench.runtimes import registry
from bench.scenario import Scenario
from bench.scenario_load import ScenarioError, load_scenario

PATHS = ["host", "bridge", "published"]


def scenario(**overrides: object) -> Scenario:
    data: dict[str, object] = {
        "name": "t",
        "runtimes": ["bare", "docker", "lxc"],
        "repetitions": 1,
        "warmups": 0,
        "workloads": [{"name": "cpu", "stressor": "cpu", "duration_s": 4}],
    }
    data.update(overrides)
    return Scenario.model_validate(data)


def test_without_a_network_axis_the_plan_and_trial_ids_are_as_before() -> None:
    steps = build_plan(scenario(), ["bare", "docker", "lxc"])
    trials = [t for s in steps for t in s.trials]
    assert [t.network for t in trials] == ["none", "none", "none"]
    assert [t.trial_id for t in trials] == [
        "0000-bare-cpu-r0",
        "0001-docker-cpu-r0",
        "0002-lxc-cpu-r0",
    ]


def test_each_runtime_runs_the_listed_modes_and_bare_metal_once_on_loopback() -> None:
    steps = build_plan(scenario(network_modes=PATHS), ["bare", "docker", "lxc"])
    trials = [t for s in steps for t in s.trials]
    planned = [(t.runtime, t.network, t.skip_reason != "") for t in trials]
    assert planned == [
        ("bare", "host", False),
        ("docker", "host", False),
        ("docker", "bridge", False),
        ("docker", "published", False),
        ("lxc", "host", False),
        ("lxc", "bridge", False),
        ("lxc", "published", True),  # recorded as skipped, with the reason
    ]
    skipped = trials[-1]
    assert "lxc does not support network mode 'published'" in skipped.skip_reason
    assert skipped.trial_id == "0006-lxc-published-cpu-r0"


def test_the_network_axis_multiplies_the_oci_axis() -> None:
    steps = build_plan(
        scenario(runtimes=["docker"], oci_runtimes=["runc", "crun"], network_modes=["bridge"]),
        ["docker"],
    )
    assert [s.group_id for s in steps] == [
        "0000-docker-runc-bridge-cpu-r0",
        "0001-docker-crun-bridge-cpu-r0",
    ]


def test_none_and_a_path_give_bare_metal_both() -> None:
    steps = build_plan(scenario(network_modes=["none", "bridge"]), ["bare", "docker"])
    planned = [(s.trials[0].runtime, s.trials[0].network) for s in steps]
    assert planned == [
        ("bare", "none"),
        ("bare", "host"),
        ("docker", "none"),
        ("docker", "bridge"),
    ]


def test_every_declared_mode_is_a_known_one() -> None:
    known = {"none", "host", "bridge", "published"}
    for name in registry.names():
        assert registry.entry(name).capabilities.network_modes <= known


def test_labels_carry_the_network_path_and_the_baseline_is_bare_metal_on_loopback() -> None:
    trials = pd.DataFrame(
        {
            "runtime": ["bare", "docker", "docker", "podman"],
            "oci_runtime": ["", "", "", ""],
            "network": ["host", "bridge", "published", "none"],
        }
    )
    labels = list(_add_labels(trials)["label"])
    assert labels == ["bare/host", "docker/bridge", "docker/published", "podman"]
    assert default_baseline(labels) == "bare/host"
    assert label_order(labels)[0] == "bare/host"
    assert registry.of_label("docker/published") == registry.entry("docker")
    assert baseline_title("bare/host") == "bare metal on loopback"
    assert baseline_title("docker/bridge") == "docker/bridge"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


BODY = """
[[workloads]]
name = "cpu"
stressor = "cpu"
"""


def test_an_unknown_mode_names_file_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, f'name = "t"\nnetwork_modes = ["host", "macvlan"]\n{BODY}')
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    message = str(error.value)
    assert message.startswith(f"{path}:2: network_modes[1]:")
    assert "'published'" in message and "macvlan" in message


def test_a_mode_no_listed_runtime_offers_is_refused_before_anything_runs(tmp_path: Path) -> None:
    text = (
        f'name = "t"\nruntimes = ["bare", "lxc"]\n\nnetwork_modes = ["bridge", "published"]\n{BODY}'
    )
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    message = str(error.value)
    assert message.startswith(f"{path}:4: network_modes:")
    assert "'published' is offered by none of this scenario's runtimes (bare, lxc)" in message
    assert "docker, podman" in message


def test_a_mode_listed_twice_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, f'name = "t"\nnetwork_modes = ["host", "host"]\n{BODY}')
    with pytest.raises(ScenarioError, match=r":2: network_modes: list each entry once"):
        load_scenario(path)
