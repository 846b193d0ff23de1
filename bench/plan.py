"""Scenario -> ordered trials: runtimes interleaved (A B C D A B C D ...), warm-ups first."""

from __future__ import annotations

from dataclasses import dataclass

from bench.scenario import Scenario, WorkloadModel
from bench.spec import Limits

CONTAINER_ENGINES = ("docker", "podman")


@dataclass(frozen=True)
class Trial:
    """One workload started once under one runtime."""

    trial_id: str
    runtime: str
    oci_runtime: str
    workload: WorkloadModel
    role: str
    group_id: str
    repetition: int
    warmup: bool
    limits: Limits


@dataclass(frozen=True)
class PlanStep:
    """Trials started together (one for solo runs; victim plus aggressors for isolation)."""

    group_id: str
    trials: tuple[Trial, ...]


def runtime_axes(scenario: Scenario, runtimes: list[str]) -> list[tuple[str, str]]:
    """(runtime, OCI runtime) pairs; the OCI axis applies to docker and podman only."""
    axes: list[tuple[str, str]] = []
    for runtime in runtimes:
        if runtime in CONTAINER_ENGINES and scenario.oci_runtimes:
            axes.extend((runtime, oci) for oci in scenario.oci_runtimes)
        else:
            axes.append((runtime, ""))
    return axes


def build_plan(scenario: Scenario, runtimes: list[str]) -> list[PlanStep]:
    """Every step of the run in execution order; trial ids are stable across resumes."""
    limits = scenario.limits.to_limits()
    rounds = [(True, rep) for rep in range(scenario.warmups)]
    rounds += [(False, rep) for rep in range(scenario.repetitions)]
    steps: list[PlanStep] = []
    for warmup, repetition in rounds:
        for workload in scenario.workloads:
            for runtime, oci in runtime_axes(scenario, runtimes):
                index = len(steps)
                label = f"{runtime}-{oci}" if oci else runtime
                kind = "w" if warmup else "r"
                trial_id = f"{index:04d}-{label}-{workload.name}-{kind}{repetition}"
                trial = Trial(
                    trial_id=trial_id,
                    runtime=runtime,
                    oci_runtime=oci,
                    workload=workload,
                    role="solo",
                    group_id=trial_id,
                    repetition=repetition,
                    warmup=warmup,
                    limits=limits,
                )
                steps.append(PlanStep(trial_id, (trial,)))
    return steps
