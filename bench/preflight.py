"""A scenario checked against this host before anything runs or is written.

Each check refuses a mistake that would otherwise fail every trial one by one (or run and
measure nothing): CPUs the host does not have, stress-ng options stress-ng rejects, a
memory limit above the host's memory, a pids limit too small for the workload to start,
a memory limit below what stress-ng's stream allocates.
Errors are ScenarioError ("FILE:LINE: field: what is wrong and the fix", exit 2).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.errors import InputError
from bench.plan import PLACEMENT_CPUSETS
from bench.scenario import LimitsModel, Scenario, WorkloadModel
from bench.scenario_load import Loc, ScenarioError, located
from bench.scenario_values import parse_size_bytes
from bench.workloads import OOMABLE_STRESSORS, build_argv

ONLINE_CPUS = Path("/sys/devices/system/cpu/online")
CPU0_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")
DRY_RUN_TIMEOUT_S = 10.0  # a dry run took 16 ms here; only a hung binary takes longer
STRESS_NG_MESSAGE_MAX_CHARS = 800

# Processes a stress-ng workload needs to start, measured in a v1 pids cgroup on this host
# (stress-ng 0.15.06): its main process plus one per worker (`--cpu 2` runs with pids.max
# 3, not 2), and under --oomable one more child per worker (`--vm 2 --oomable`: 4211 and
# 2866 failed forks at pids.max 3 and 4, none at 5). Below that stress-ng does not fail:
# it retries fork() at full CPU until bench's timeout_s kills it (`--cpu 1` at pids.max 1
# ran until killed), or it reports success with stressors that never ran (vm).
# On top, the container runtimes run bench's wrapper shell in the container's cgroup
# (bench.runtimes._container), and LXC also its lxc-init.
STRESS_NG_MAIN_PROCESSES = 1
RUNTIME_INIT_PROCESSES = 2
# stress-ng's stream allocates three arrays of four times the L3 size (its workers share
# them): `--stream-l3-size 32m` peaked at 395 MB with one worker and 2 x 199 MB with two;
# this VM's reported 480 MiB L3 made 5.9 GB (README, "Stressors").
STREAM_BYTES_PER_L3_BYTE = 12


@dataclass(frozen=True)
class HostLimits:
    """What this host can give a trial."""

    cpus: frozenset[int]
    memory_bytes: int
    # host_cgroup_version(): whether a runtime can apply limits here (Capabilities.limits_on).
    cgroup_version: str = ""
    l3_cache_bytes: int | None = None  # as stress-ng reads it from sysfs; None: not known


def check_scenario(
    scenario: Scenario,
    path: Path,
    host: HostLimits | None = None,
    requested: Sequence[str] = (),
) -> None:
    """Refuse (ScenarioError) a scenario this host cannot run as written.

    `requested`: the runtimes asked for by name (`bench run --runtime`); one of them that
    cannot apply the scenario's limits here is refused (in a scenario's own list it is
    skipped instead, with the same reason: bench.plan).
    """
    host = host or host_limits()
    text = _read(path)
    for loc, limits, needs in _limit_sets(scenario):
        _check_limits(path, text, loc, limits, needs, host)
        _check_limits_apply(path, text, loc, limits, requested, host)
    if scenario.isolation is not None:
        for placement in scenario.isolation.placements:
            for cpuset in PLACEMENT_CPUSETS[placement]:
                missing = set(parse_cpuset(cpuset or "")) - host.cpus
                if missing:
                    raise ScenarioError(
                        located(
                            path,
                            text,
                            ("isolation", "placements"),
                            f"placement {placement!r} pins to CPU {_cpu_list(missing)} and "
                            f"this host has no CPU {_cpu_list(missing)} (its CPUs: "
                            f"{_cpu_list(host.cpus)}); leave this placement out",
                        )
                    )
    for loc, workload in _workloads(scenario):
        _check_service_cpus(path, text, loc, workload, host)
        _check_argv(path, text, loc, workload)


def _check_limits_apply(
    path: Path,
    text: str,
    loc: Loc,
    limits: LimitsModel,
    requested: Sequence[str],
    host: HostLimits,
) -> None:
    """Each runtime asked for by name applies this [limits] table on this host."""
    from bench.runtimes import registry

    set_keys = [key for key, value in limits.model_dump().items() if value is not None]
    if not set_keys or not host.cgroup_version:
        return
    for name in requested:
        capabilities = registry.entry(name).capabilities
        refusal = capabilities.limits_refusal(name, host.cgroup_version, set_keys)
        if refusal:
            raise ScenarioError(located(path, text, (*loc, set_keys[0]), refusal))


def _check_service_cpus(
    path: Path, text: str, loc: Loc, workload: WorkloadModel, host: HostLimits
) -> None:
    """A service's server and client CPUs exist on this host."""
    named: list[tuple[Loc, str | None]] = [(("server_cpus",), workload.server_cpus)]
    if workload.load is not None:
        named.append((("load", "client_cpus"), workload.load.client_cpus))
    for key, cpuset in named:
        missing = set(parse_cpuset(cpuset or "")) - host.cpus
        if missing:
            message = (
                f"this host has no CPU {_cpu_list(missing)} (its CPUs: "
                f"{_cpu_list(host.cpus)}); name CPUs from that list"
            )
            raise ScenarioError(located(path, text, (*loc, *key), message))


def host_limits() -> HostLimits:
    """The online CPUs and physical memory of this host."""
    try:
        cpus = parse_cpuset(ONLINE_CPUS.read_text().strip())
    except (OSError, ValueError):
        cpus = list(range(os.cpu_count() or 1))
    from bench.cgroups.locate import host_cgroup_version

    memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return HostLimits(frozenset(cpus), memory_bytes, host_cgroup_version(), _l3_cache_bytes())


def _l3_cache_bytes() -> int | None:
    """CPU 0's level 3 cache size from sysfs ("491520K"), or None without one."""
    for index in sorted(CPU0_CACHES.glob("index*")):
        try:
            if (index / "level").read_text().strip() == "3":
                return parse_size_bytes((index / "size").read_text().strip())
        except (OSError, ValueError):
            return None
    return None


def parse_cpuset(text: str) -> list[int]:
    """ "0-2,5" -> [0, 1, 2, 5] (the kernel's cpu list format); "" -> []."""
    cpus: list[int] = []
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def pids_needed(workload: WorkloadModel) -> int:
    """Processes `workload` needs in its cgroup to start (see STRESS_NG_MAIN_PROCESSES)."""
    if workload.stressor is None:  # a command, or a server (nginx: master and worker)
        return (2 if workload.service is not None else 1) + RUNTIME_INIT_PROCESSES
    per_worker = 2 if workload.stressor in OOMABLE_STRESSORS else 1
    return STRESS_NG_MAIN_PROCESSES + per_worker * workload.workers + RUNTIME_INIT_PROCESSES


def stream_bytes_needed(workload: WorkloadModel, host: HostLimits) -> int | None:
    """What a stream workload's arrays take (STREAM_BYTES_PER_L3_BYTE); None if not stream."""
    if workload.stressor != "stream":
        return None
    given = workload.options.get("stream-l3-size")
    try:
        l3_bytes = host.l3_cache_bytes if given is None else parse_size_bytes(str(given))
    except ValueError:
        return None  # a form stress-ng may still take; its own parsing checks it
    return None if l3_bytes is None else STREAM_BYTES_PER_L3_BYTE * l3_bytes


def _limit_sets(scenario: Scenario) -> Iterator[tuple[Loc, LimitsModel, list[WorkloadModel]]]:
    """Each [limits] table with where it is and the workloads that run under it."""
    yield ("limits",), scenario.limits, list(scenario.workloads)
    if scenario.isolation is not None:
        for index, aggressor in enumerate(scenario.isolation.aggressors):
            loc: Loc = ("isolation", "aggressors", index, "limits")
            yield loc, aggressor.limits, [aggressor.to_workload(1.0)]


def _workloads(scenario: Scenario) -> Iterator[tuple[Loc, WorkloadModel]]:
    for index, workload in enumerate(scenario.workloads):
        yield ("workloads", index), workload
    if scenario.isolation is not None:
        for index, aggressor in enumerate(scenario.isolation.aggressors):
            yield ("isolation", "aggressors", index), aggressor.to_workload(1.0)


def _check_limits(
    path: Path,
    text: str,
    loc: Loc,
    limits: LimitsModel,
    workloads: list[WorkloadModel],
    host: HostLimits,
) -> None:
    def refuse(key: str, message: str) -> None:
        raise ScenarioError(located(path, text, (*loc, key), message))

    values = limits.to_limits()
    if values.cpuset is not None:
        missing = set(parse_cpuset(values.cpuset)) - host.cpus
        if missing:
            refuse(
                "cpuset",
                f"this host has no CPU {_cpu_list(missing)} (its CPUs: "
                f"{_cpu_list(host.cpus)}); name CPUs from that list",
            )
    if values.cpus is not None and values.cpus > len(host.cpus):
        refuse(
            "cpus",
            f"{values.cpus:g} CPUs is more than this host has ({len(host.cpus)}), so it "
            f"limits nothing; use at most {len(host.cpus)}",
        )
    if values.memory_bytes is not None and values.memory_bytes > host.memory_bytes:
        refuse(
            "memory",
            f"{values.memory_bytes / (1 << 30):.2f} GiB is more than this host's memory "
            f"({host.memory_bytes / (1 << 30):.2f} GiB), so it limits nothing; use less",
        )
    for workload in workloads:
        stream_bytes = stream_bytes_needed(workload, host)
        if stream_bytes and values.memory_bytes and stream_bytes > values.memory_bytes:
            refuse(
                "memory",
                f"workload {workload.name!r} is stress-ng's stream, whose arrays take "
                f"{STREAM_BYTES_PER_L3_BYTE} times the L3 cache size (its stream-l3-size "
                f"option, else the L3 this host reports), here "
                f"{stream_bytes / (1 << 20):.0f} MiB: every trial would be OOM-killed "
                f"under this limit; set stream-l3-size (e.g. "
                f'"32m": 384 MiB) or raise the limit',
            )
    if values.pids is not None:
        needs = max(((pids_needed(w), w.name) for w in workloads), default=(0, ""))
        if values.pids < needs[0]:
            refuse(
                "pids",
                f"{values.pids} processes are too few for workload {needs[1]!r} to start "
                f"(it needs {needs[0]}: stress-ng's main process, its workers and the "
                f"runtime's init); use at least {needs[0]}",
            )


def _check_argv(path: Path, text: str, loc: Loc, workload: WorkloadModel) -> None:
    """The workload's argv as bench runs it, through stress-ng's own option parsing."""
    if workload.service is not None:  # argv from bench's own server catalogue
        return
    try:
        argv = build_argv(workload)
    except InputError as exc:  # a command's program that is not there
        raise ScenarioError(located(path, text, (*loc, "command"), str(exc).rstrip("."))) from None
    if workload.stressor is None:
        return
    # --dry-run parses every option and exits 1 with stress-ng's message when one is bad,
    # without running a stressor; it still writes the --yaml file, so in a scratch dir.
    with tempfile.TemporaryDirectory(prefix="bench-preflight-") as scratch:
        try:
            done = subprocess.run(
                [*argv, "--dry-run"],
                cwd=scratch,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=DRY_RUN_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ScenarioError(
                located(path, text, loc, f"stress-ng could not check the options: {exc}")
            ) from None
    if done.returncode == 0:
        return
    lines = [
        line.strip()
        for line in (done.stderr + "\n" + done.stdout).splitlines()
        if line.strip() and not line.startswith(("Try 'stress-ng --help'", "stress-ng: info:"))
    ]
    said = " ".join(lines)[:STRESS_NG_MESSAGE_MAX_CHARS] or f"exit code {done.returncode}"
    key = next((k for k in workload.options if k in said), None)
    where: Loc = (*loc, "options", key) if key else (*loc, "options")
    raise ScenarioError(located(path, text, where, f"stress-ng rejects these options: {said}"))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""  # load_scenario read it a moment ago; without the text, errors say line 1


def _cpu_list(cpus: set[int] | frozenset[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))
