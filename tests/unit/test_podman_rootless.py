"""podman-rootless without running it: its podman command line, and limits it cannot apply
on v1 (skipped in a scenario's list, refused when asked for by name) but can on v2."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.plan import build_plan
from bench.preflight import HostLimits, check_scenario
from bench.runtimes import registry
from bench.runtimes.podman_rootless import run_args
from bench.scenario import Scenario
from bench.scenario_load import ScenarioError, load_scenario
from bench.spec import Limits, StartSpec

HOST = HostLimits(cpus=frozenset({0, 1}), memory_bytes=4 << 30, cgroup_version="hybrid")
WITH_LIMITS = """\
name = "r"
runtimes = ["bare", "podman-rootless"]

[limits]
memory = "256m"

[[workloads]]
name = "w"
command = ["/bin/true"]
"""


def test_run_args_are_rootful_podmans_container_with_slirp4netns_for_published() -> None:
    spec = StartSpec(
        name="bench-x",
        argv=("/bin/true",),
        io_dir=Path("/r/io"),
        rlimits=(("nofile", 1024, 2048),),
        network="published",
        ports=(8080, 9090),
    )
    args = run_args(spec, Path("/home/u/io/bench-x"))
    assert args[:4] == ["run", "--detach", "--name", "bench-x"]
    for option in ("--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges"):
        assert option in args
    assert "--volume=/home/u/io/bench-x:/bench" in args  # the user's copy, not /r/io
    assert "--ulimit=nofile=1024:2048" in args
    assert "--network=slirp4netns" in args
    assert [a for a in args if a.startswith("--publish")] == [
        "--publish=127.0.0.1::8080",
        "--publish=127.0.0.1::9090",
    ]
    none = run_args(StartSpec(name="bench-y", argv=("/bin/true",), io_dir=Path("/r")), Path("/s"))
    assert "--network=none" in none and not any(a.startswith("--publish") for a in none)
    # v1: no cgroup parent (rootless podman makes none) and no limit options (a cpuset is
    # CPU affinity there).
    pinned = StartSpec(name="bench-p", argv=(), io_dir=Path("/r"), limits=Limits(cpuset="0"))
    for args in (none, run_args(pinned, Path("/s"))):
        assert not any(
            a.startswith(("--cgroup-parent", "--cpu", "--memory", "--pids")) for a in args
        )


def test_on_v2_the_container_goes_below_the_delegated_cgroup_with_the_limits() -> None:
    limits = Limits(cpus=0.5, cpuset="0-1", memory_bytes=256 << 20, pids=64)
    spec = StartSpec(name="bench-z", argv=("/bin/true",), io_dir=Path("/r"), limits=limits)
    args = run_args(spec, Path("/s"), "/bench/bench-z")
    assert "--cgroup-parent=/bench/bench-z" in args
    for option in (
        "--cpu-period=100000",
        "--cpu-quota=50000",
        "--cpuset-cpus=0-1",
        f"--memory={256 << 20}",
        f"--memory-swap={256 << 20}",  # equal: no swap
        "--pids-limit=64",
    ):
        assert option in args


def test_limits_apply_on_v2_only_and_the_reason_says_what_is_measured() -> None:
    capabilities = registry.entry("podman-rootless").capabilities
    assert capabilities.limits_refusal("podman-rootless", "v2", ["cpuset", "pids"]) == ""
    for version in ("v1", "hybrid"):
        refusal = capabilities.limits_refusal("podman-rootless", version, ["cpuset", "pids"])
        assert refusal.startswith(
            f"podman-rootless cannot apply limits on cgroup {version} (it can on v2)"
        )
    assert "conmon, slirp4netns and rootlessport" in refusal
    assert capabilities.limits_refusal("podman-rootless", "hybrid", ["cpuset"]) == ""
    assert capabilities.limits_refusal("podman-rootless", "hybrid", []) == ""
    podman = registry.entry("podman").capabilities
    assert podman.limits_refusal("podman", "hybrid", ["memory_bytes"]) == ""


def test_trials_with_limits_are_planned_skipped_and_without_limits_run(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(WITH_LIMITS)
    scenario = load_scenario(path)
    trials = [
        t for s in build_plan(scenario, scenario.runtimes, cgroup_version="v1") for t in s.trials
    ]
    reasons = {t.runtime: t.skip_reason for t in trials}
    assert reasons["bare"] == ""
    assert reasons["podman-rootless"].startswith("podman-rootless cannot apply limits on cgroup v1")
    unlimited = Scenario.model_validate(scenario.model_dump() | {"limits": {"memory": None}})
    plan = build_plan(unlimited, unlimited.runtimes, cgroup_version="v1")
    assert all(not t.skip_reason for s in plan for t in s.trials)


def test_asked_for_by_name_with_limits_it_is_refused_at_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(WITH_LIMITS)
    scenario = load_scenario(path)
    check_scenario(scenario, path, HOST)  # in the scenario's own list: skipped, not refused
    check_scenario(scenario, path, HOST, requested=["bare"])
    with pytest.raises(ScenarioError) as caught:
        check_scenario(scenario, path, HOST, requested=["podman-rootless"])
    message = str(caught.value)
    assert message.startswith(f"{path}:5: limits.memory: podman-rootless cannot apply limits")
    assert "Remove [limits] to run it" in message


def test_a_cpuset_alone_is_planned_and_pins_by_taskset_where_limits_do_not_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service's server pinned apart from its client runs under podman-rootless on v1: the
    cpuset becomes busybox's taskset around the container command."""
    from bench.runtimes import podman_rootless

    path = tmp_path / "s.toml"
    path.write_text(WITH_LIMITS.replace('memory = "256m"', 'cpuset = "0"'))
    scenario = load_scenario(path)
    check_scenario(scenario, path, HOST, requested=["podman-rootless"])
    plan = build_plan(scenario, scenario.runtimes, cgroup_version="v1")
    trials = [t for s in plan for t in s.trials]
    assert {t.runtime for t in trials} == {"bare", "podman-rootless"}
    assert all(t.skip_reason == "" and t.limits.cpuset == "0" for t in trials)
    monkeypatch.setattr(podman_rootless, "host_cgroup_version", lambda: "v1")
    command = ["/bin/busybox", "sh", "-c", "x"]
    assert podman_rootless.pinned(Limits(cpuset="0-1"), command) == [
        "/bin/busybox", "taskset", "-c", "0-1", *command,
    ]  # fmt: skip
    assert podman_rootless.pinned(Limits(), command) == command
