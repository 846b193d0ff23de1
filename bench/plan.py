"""Scenario -> ordered trials: runtimes interleaved (A B C D A B C D ...), warm-ups first."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bench.errors import InputError
from bench.results import Role
from bench.runtimes import registry
from bench.scenario import AggressorModel, Scenario, WorkloadModel
from bench.spec import NETWORK_MODES, Limits, NetworkMode

# Placement -> (victim cpuset, aggressor cpuset); None keeps the scenario's own.
PLACEMENT_CPUSETS: dict[str, tuple[str | None, str | None]] = {
    "any": (None, None),
    "shared": ("0", "0"),
    "separate": ("0", "1"),
}
# An aggressor runs until the victim is done, then it is stopped; its own stress-ng
# timeout only has to outlast the victim (start-up included).
AGGRESSOR_EXTRA_S = 30.0


@dataclass(frozen=True)
class Trial:
    """One workload started once under one runtime."""

    trial_id: str
    runtime: str
    oci_runtime: str
    workload: WorkloadModel
    role: Role
    group_id: str
    repetition: int
    warmup: bool
    limits: Limits
    isolation_kind: str = ""
    placement: str = ""
    network: NetworkMode = "none"
    # Set when the plan already knows the trial cannot run (a network mode its runtime
    # lacks): the runner records it as skipped with this reason.
    skip_reason: str = ""
    # Service trials: the client's offered rate (None: closed loop), and the tier of a
    # multi-tier service this trial runs ("" for a single server; bench.stacks).
    offered_rate_per_s: float | None = None
    tier: str = ""


@dataclass(frozen=True)
class PlanStep:
    """Trials started together: one for solo runs, victim plus aggressor for isolation,
    N copies for density runs."""

    group_id: str
    trials: tuple[Trial, ...]


@dataclass(frozen=True)
class _StepShape:
    """A step before it is given ids and a runtime: (role, workload, limits) members; a
    multi-tier service's members name their tiers (in start order)."""

    label: str
    members: tuple[tuple[Role, WorkloadModel, Limits], ...]
    tiers: tuple[str, ...] = ()
    isolation_kind: str = ""
    placement: str = ""
    offered_rate_per_s: float | None = None


def runtime_axes(scenario: Scenario, runtimes: list[str]) -> list[tuple[str, str]]:
    """(runtime, OCI runtime) pairs; the OCI axis applies to runtimes that declare it."""
    axes: list[tuple[str, str]] = []
    for runtime in runtimes:
        axis = registry.entry(runtime).capabilities.oci_runtime_axis
        if axis and scenario.oci_runtimes:
            axes.extend((runtime, oci) for oci in scenario.oci_runtimes)
        else:
            axes.append((runtime, ""))
    return axes


def network_axis(scenario: Scenario, runtime: str) -> list[tuple[NetworkMode, str]]:
    """(network mode, skip reason) of one runtime: every listed mode, with the reason when
    the runtime lacks it. The baseline runtime (bare metal) has no network path of its
    own: it runs once on loopback ("host") as the baseline of every path listed."""
    entry = registry.entry(runtime)
    offered = entry.capabilities.network_modes
    listed = scenario.network_modes
    if entry.baseline:
        modes: list[NetworkMode] = ["none"] if "none" in listed else []
        if any(mode != "none" for mode in listed) and "host" in offered:
            modes.append("host")
        return [(mode, "") for mode in modes]
    return [
        (
            mode,
            ""
            if mode in offered
            else f"{runtime} does not support network mode {mode!r} (it offers "
            f"{', '.join(m for m in NETWORK_MODES if m in offered)})",
        )
        for mode in listed
    ]


def _shapes(scenario: Scenario, cpus: int) -> list[_StepShape]:
    """What one round runs, for one runtime: solo (or baseline) steps, then isolation."""
    limits = scenario.limits.to_limits()
    isolation = scenario.isolation
    if isolation is None:
        return [shape for w in scenario.workloads for shape in _solo_shapes(scenario, w, limits)]
    if "separate" in isolation.placements and cpus < 2:
        raise InputError("placement 'separate' needs at least 2 CPUs; this host has 1")
    shapes: list[_StepShape] = []
    for victim in scenario.workloads:
        # One baseline per distinct victim cpuset: the victim alone, pinned as in the
        # isolation steps it is compared with.
        victim_cpusets = dict.fromkeys(PLACEMENT_CPUSETS[p][0] for p in isolation.placements)
        for cpuset in victim_cpusets:
            solo_limits = _pinned(limits, cpuset)
            shapes.append(_StepShape(victim.name, (("solo", victim, solo_limits),)))
        for aggressor in isolation.aggressors:
            for placement in isolation.placements:
                shapes.append(_isolation_shape(victim, aggressor, placement, limits))
    return shapes


def _solo_shapes(scenario: Scenario, workload: WorkloadModel, limits: Limits) -> list[_StepShape]:
    """One step per workload; a service's server pinned apart from its client, one step per
    offered rate of a sweep."""
    if workload.service is None:
        return [
            _StepShape(
                workload.name, tuple(("solo", workload, limits) for _ in range(scenario.density))
            )
        ]
    from bench.loadspec import default_cpus
    from bench.service import rates
    from bench.stacks import stack_of

    server_limits = _pinned(limits, workload.server_cpus or limits.cpuset or default_cpus()[0])
    tiers = tuple(tier.name for tier in stack_of(workload.service).tiers)
    return [
        _StepShape(
            workload.name if rate is None else f"{workload.name}-{rate:g}rps",
            tuple(("solo", workload, server_limits) for _ in tiers),
            offered_rate_per_s=rate,
            tiers=tiers if len(tiers) > 1 else (),
        )
        for rate in rates(workload)
    ]


def _isolation_shape(
    victim: WorkloadModel, aggressor: AggressorModel, placement: str, limits: Limits
) -> _StepShape:
    victim_cpuset, aggressor_cpuset = PLACEMENT_CPUSETS[placement]
    aggressor_workload = aggressor.to_workload(victim.duration_s + AGGRESSOR_EXTRA_S)
    return _StepShape(
        f"{victim.name}-vs-{aggressor.name}-{placement}",
        (
            # Aggressor first, so the victim meets it from its first instruction.
            (
                "aggressor",
                aggressor_workload,
                _pinned(aggressor.limits.to_limits(), aggressor_cpuset),
            ),
            ("victim", victim, _pinned(limits, victim_cpuset)),
        ),
        isolation_kind=aggressor.kind,
        placement=placement,
    )


def _limits_refusal(runtime: str, limits: Limits, cgroup_version: str) -> str:
    if not cgroup_version:
        return ""
    capabilities = registry.entry(runtime).capabilities
    return capabilities.limits_refusal(runtime, cgroup_version, limits.set_keys())


def _pinned(limits: Limits, cpuset: str | None) -> Limits:
    return limits if cpuset is None else dataclasses.replace(limits, cpuset=cpuset)


def _axes(
    scenario: Scenario, runtimes: list[str]
) -> list[tuple[str, str, NetworkMode | None, str]]:
    """(runtime, OCI runtime, network mode, skip reason); the mode is None for "none", so
    trial ids of scenarios without a network axis stay what they were."""
    return [
        (runtime, oci, None if network == "none" else network, reason)
        for runtime, oci in runtime_axes(scenario, runtimes)
        for network, reason in network_axis(scenario, runtime)
    ]


def build_plan(
    scenario: Scenario, runtimes: list[str], cpus: int = 2, cgroup_version: str = ""
) -> list[PlanStep]:
    """Every step of the run in execution order; trial ids are stable across resumes.

    `cgroup_version` (the host's): a trial with limits its runtime cannot apply there is
    planned skipped with the reason (Capabilities.limits_on); "" plans every trial.
    """
    rounds = [(True, rep) for rep in range(scenario.warmups)]
    rounds += [(False, rep) for rep in range(scenario.repetitions)]
    shapes = _shapes(scenario, cpus)
    steps: list[PlanStep] = []
    for warmup, repetition in rounds:
        for shape in shapes:
            for runtime, oci, network, skip_reason in _axes(scenario, runtimes):
                index = len(steps)
                runtime_label = "-".join(filter(None, [runtime, oci, network]))
                kind = "w" if warmup else "r"
                group_id = f"{index:04d}-{runtime_label}-{shape.label}-{kind}{repetition}"
                tiers = shape.tiers or ("",) * len(shape.members)
                trials = tuple(
                    Trial(
                        trial_id=group_id
                        if len(shape.members) == 1
                        else f"{group_id}-{n}-{tier or role}",
                        runtime=runtime,
                        oci_runtime=oci,
                        workload=workload,
                        role=role,
                        group_id=group_id,
                        repetition=repetition,
                        warmup=warmup,
                        limits=member_limits,
                        isolation_kind=shape.isolation_kind,
                        placement=shape.placement,
                        network=network or "none",
                        skip_reason=skip_reason
                        or _limits_refusal(runtime, member_limits, cgroup_version),
                        offered_rate_per_s=shape.offered_rate_per_s,
                        tier=tier,
                    )
                    for n, ((role, workload, member_limits), tier) in enumerate(
                        zip(shape.members, tiers, strict=True)
                    )
                )
                steps.append(PlanStep(group_id, trials))
    return steps
