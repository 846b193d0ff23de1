"""Plans: interleaving, warm-ups, isolation steps and placements, density, quick mode."""

from __future__ import annotations

import pytest

from bench.errors import InputError
from bench.plan import PlanStep, build_plan
from bench.scenario import Scenario


def scenario(**overrides: object) -> Scenario:
    data: dict[str, object] = {
        "name": "t",
        "runtimes": ["bare", "docker"],
        "repetitions": 2,
        "warmups": 1,
        "workloads": [{"name": "cpu", "stressor": "cpu", "duration_s": 4}],
    }
    data.update(overrides)
    return Scenario.model_validate(data)


ISOLATION = {
    "aggressors": [{"name": "hog", "kind": "cpu", "workers": 2}],
    "placements": ["shared", "separate"],
}


def test_runtimes_interleave_and_warmups_come_first() -> None:
    steps = build_plan(scenario(), ["bare", "docker"])
    order = [(s.trials[0].runtime, s.trials[0].warmup, s.trials[0].repetition) for s in steps]
    assert order == [
        ("bare", True, 0),
        ("docker", True, 0),
        ("bare", False, 0),
        ("docker", False, 0),
        ("bare", False, 1),
        ("docker", False, 1),
    ]
    assert len({t.trial_id for s in steps for t in s.trials}) == len(steps)


def test_trial_ids_are_stable_so_resume_can_match_them() -> None:
    first = [t.trial_id for s in build_plan(scenario(), ["bare"]) for t in s.trials]
    second = [t.trial_id for s in build_plan(scenario(), ["bare"]) for t in s.trials]
    assert first == second


def test_oci_runtimes_are_an_axis_for_engines_only() -> None:
    steps = build_plan(scenario(oci_runtimes=["runc", "crun"], warmups=0, repetitions=1),
                       ["bare", "docker"])  # fmt: skip
    assert [(s.trials[0].runtime, s.trials[0].oci_runtime) for s in steps] == [
        ("bare", ""),
        ("docker", "runc"),
        ("docker", "crun"),
    ]


def test_isolation_has_a_pinned_baseline_then_victim_and_aggressor_per_placement() -> None:
    steps = build_plan(scenario(isolation=ISOLATION, warmups=0, repetitions=1), ["bare"])
    roles = [[t.role for t in s.trials] for s in steps]
    assert roles == [["solo"], ["aggressor", "victim"], ["aggressor", "victim"]]
    baseline, shared, separate = steps
    assert baseline.trials[0].limits.cpuset == "0"
    assert [t.limits.cpuset for t in shared.trials] == ["0", "0"]
    assert [t.limits.cpuset for t in separate.trials] == ["1", "0"]
    assert {t.placement for t in separate.trials} == {"separate"}
    assert {t.isolation_kind for t in shared.trials} == {"cpu"}
    aggressor = shared.trials[0].workload
    # The aggressor outlives the victim: it is stopped when the victim is done.
    assert aggressor.duration_s > shared.trials[1].workload.duration_s


def test_separate_placement_needs_two_cpus() -> None:
    with pytest.raises(InputError, match="2 CPUs"):
        build_plan(scenario(isolation=ISOLATION), ["bare"], cpus=1)


def test_memory_aggressor_allocates_past_its_own_limit() -> None:
    iso = {"aggressors": [{"name": "m", "kind": "memory", "limits": {"memory": "128m"}}]}
    steps = build_plan(scenario(isolation=iso, warmups=0, repetitions=1), ["bare"])
    aggressor = steps[1].trials[0]
    assert aggressor.limits.memory_bytes == 128 << 20
    assert aggressor.workload.options["vm-bytes"] == "256m"


def test_density_starts_n_copies_together() -> None:
    steps = build_plan(scenario(density=5, warmups=0, repetitions=1), ["docker"])
    assert len(steps) == 1
    assert len(steps[0].trials) == 5
    assert len({t.trial_id for t in steps[0].trials}) == 5
    assert {t.group_id for t in steps[0].trials} == {steps[0].group_id}


def test_quick_mode_keeps_what_is_measured_but_shrinks_it() -> None:
    full = scenario(repetitions=10, warmups=2, quick={"repetitions": 3, "duration_s": 1})
    quick = full.quickened()
    assert (quick.repetitions, quick.warmups) == (3, 0)
    assert quick.workloads[0].duration_s == 1
    assert quick.workloads[0].stressor == full.workloads[0].stressor
    assert quick.limits == full.limits


SERVICE = {"name": "web", "service": "nginx-static", "server_cpus": "0"}


def test_service_trials_take_the_network_paths_a_cpu_workload_takes() -> None:
    """test_network_plan pins the paths down; a service workload must not change them."""
    axes: dict[str, object] = {"runtimes": ["bare", "docker", "lxc"], "warmups": 0}
    axes.update(repetitions=1, network_modes=["host", "bridge", "published"])
    plan = build_plan(scenario(**axes, workloads=[SERVICE]), ["bare", "docker", "lxc"])
    cpu_plan = build_plan(scenario(**axes), ["bare", "docker", "lxc"])

    def paths(steps: list[PlanStep]) -> list[tuple[str, str, str]]:
        return [(s.trials[0].runtime, s.trials[0].network, s.trials[0].skip_reason) for s in steps]

    assert paths(plan) == paths(cpu_plan)
    assert len(plan) == 7
    assert all(step.trials[0].limits.cpuset == "0" for step in plan)
    assert plan[3].group_id == "0003-docker-published-web-r0"


def test_bare_metal_runs_on_loopback_whatever_modes_are_listed() -> None:
    plan = build_plan(
        scenario(warmups=0, repetitions=1, network_modes=["published"], workloads=[SERVICE]),
        ["bare", "docker"],
    )
    assert [(s.trials[0].runtime, s.trials[0].network) for s in plan] == [
        ("bare", "host"),
        ("docker", "published"),
    ]


def test_a_rate_sweep_is_one_step_per_offered_rate() -> None:
    workload = {"name": "rr", "service": "tcp-rr", "load": {"rate_per_s": [1000, 5000]}}
    plan = build_plan(
        scenario(
            runtimes=["bare"],
            warmups=0,
            repetitions=1,
            network_modes=["host"],
            workloads=[workload],
        ),
        ["bare"],
    )
    assert [s.trials[0].offered_rate_per_s for s in plan] == [1000.0, 5000.0]
    assert [s.group_id for s in plan] == [
        "0000-bare-host-rr-1000rps-r0",
        "0001-bare-host-rr-5000rps-r0",
    ]


def test_quick_mode_shortens_the_load_too() -> None:
    quick = scenario(
        network_modes=["host"], workloads=[{**SERVICE, "load": {"duration_s": 5}}]
    ).quickened()
    load = quick.workloads[0].load
    assert load is not None and load.duration_s == 2.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"network_modes": ["none"]}, "no path to its client"),
        ({"density": 2, "network_modes": ["host"]}, "do not combine"),
    ],
)
def test_service_scenarios_refuse_what_they_cannot_measure(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        scenario(workloads=[SERVICE], **overrides)
