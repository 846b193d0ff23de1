"""The runtime registry: one entry per runtime, looked up by name, label or trial id."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import analysis
from bench.errors import InputError
from bench.plan import build_plan
from bench.report.plots import UNKNOWN_COLOUR, runtime_colour
from bench.runtimes import registry
from bench.scenario import Scenario
from bench.scenario_load import ScenarioError, load_scenario

SHIPPED = (
    "bare",
    "containerd",
    "docker",
    "podman",
    "podman-rootless",
    "lxc",
    "lxc-system",
    "lxd",
    "systemd-nspawn",
)


@pytest.fixture
def engine_alias() -> Iterator[registry.Entry]:
    """A second name for docker, registered for one test only."""
    alias = dataclasses.replace(registry.entry("docker"), name="docker-alias", order=15)
    registry.register(alias)
    try:
        yield alias
    finally:
        registry.unregister(alias.name)


def test_shipped_runtimes_in_display_order_with_bare_metal_as_baseline() -> None:
    assert registry.names() == SHIPPED
    assert registry.baseline() == "bare"
    assert registry.entry("bare").heading == "bare metal"


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(InputError, match=f"unknown runtime 'dockr'; known: {', '.join(SHIPPED)}"):
        registry.entry("dockr")


@pytest.mark.parametrize(
    ("label", "runtime"),
    [
        ("docker", "docker"),
        ("docker+crun", "docker"),  # analysis label
        ("podman-runc", "podman"),  # trial and group ids
        ("lxc", "lxc"),
        # The longer name wins over lxc followed by a separator.
        ("lxc-system", "lxc-system"),
        ("lxc-system-noop-0", "lxc-system"),
        ("lxc-noop-0", "lxc"),
        ("lxd-noop-0", "lxd"),
        ("bare", "bare"),
        ("containerd", "containerd"),
        ("kata", None),
        ("bareish", None),
    ],
)
def test_labels_map_to_their_runtime(label: str, runtime: str | None) -> None:
    found = registry.of_label(label)
    assert (found.name if found else None) == runtime


def test_colour_and_order_of_a_label_follow_its_runtime() -> None:
    assert runtime_colour("docker+crun") == registry.entry("docker").colour
    assert runtime_colour("podman-runc") == registry.entry("podman").colour
    assert runtime_colour("kata") == UNKNOWN_COLOUR
    labels = ["kata", "lxc", "podman+crun", "docker+runc", "bare", "docker+crun"]
    assert analysis.label_order(labels) == [
        "bare",
        "docker+crun",
        "docker+runc",
        "podman+crun",
        "lxc",
        "kata",
    ]
    assert analysis.label_order(labels, baseline="lxc")[0] == "lxc"


def test_a_registered_name_is_planned_ordered_and_refused_twice(
    engine_alias: registry.Entry,
) -> None:
    with_alias = list(SHIPPED)
    with_alias.insert(SHIPPED.index("docker") + 1, "docker-alias")
    assert registry.names() == tuple(with_alias)
    # Its entry, not its name, decides: the longest registered name owns a label.
    assert registry.of_label("docker-alias+crun") == engine_alias
    assert registry.of_label("docker-alias-runc") == engine_alias
    scenario = Scenario.model_validate(
        {
            "name": "t",
            "runtimes": ["bare", "docker-alias"],
            "oci_runtimes": ["runc", "crun"],
            "warmups": 0,
            "repetitions": 1,
            "workloads": [{"name": "cpu", "stressor": "cpu"}],
        }
    )
    steps = build_plan(scenario, scenario.runtimes)
    assert [(s.trials[0].runtime, s.trials[0].oci_runtime) for s in steps] == [
        ("bare", ""),
        ("docker-alias", "runc"),
        ("docker-alias", "crun"),
    ]
    with pytest.raises(ValueError, match="already registered"):
        registry.register(engine_alias)


def test_scenario_names_only_registered_runtimes(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        'name = "s"\nruntimes = ["bare", "docker-alias"]\n'
        '[[workloads]]\nname = "cpu"\nstressor = "cpu"\n'
    )
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value) == (
        f"{path}:2: runtimes[1]: unknown runtime 'docker-alias'; known: {', '.join(SHIPPED)}."
    )


def test_get_runtime_answers_to_the_name_it_was_asked_by() -> None:
    alias = dataclasses.replace(registry.entry("bare"), name="bare-alias", baseline=False)
    registry.register(alias)
    try:
        runtime = registry.get_runtime("bare-alias")
        assert type(runtime).__name__ == "BareRuntime"
        assert runtime.name == "bare-alias"
        assert registry.get_runtime("bare").name == "bare"
        assert registry.baseline() == "bare"
    finally:
        registry.unregister("bare-alias")
    assert registry.names() == SHIPPED
