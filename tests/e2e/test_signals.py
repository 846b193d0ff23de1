"""SIGINT/SIGTERM/SIGKILL at random points of a real multi-runtime `bench run`.

After SIGINT or SIGTERM: bench exits within 10 s, leaves no container, cgroup or private
podman service of its run, and the partial result loads with status `incomplete`. After
SIGKILL: `bench run` warns about what was left and `bench gc` removes it.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bench.analysis import load_run
from bench.runtimes import get_runtime
from tests.e2e import reliability as rel
from tests.helpers import bench, require, require_root

EXIT_WITHIN_S = 10.0
SEED = 6
# Four cases at seeded random moments of a ~30 s run, from runtime preparation to the last trials.
CASES = [
    (sig, round(random.Random(SEED + n).uniform(1.0, 25.0), 2))
    for n, sig in enumerate([signal.SIGINT, signal.SIGTERM, signal.SIGTERM, signal.SIGINT])
]
SLEEP_2S = ["/bin/busybox", "sleep", "2"]


@pytest.fixture(scope="module")
def runtimes() -> list[str]:
    return rel.available_runtimes()


def _trials_done(run_dir: Path) -> int:
    try:
        return int(json.loads((run_dir / "manifest.json").read_text())["trials_done"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.parametrize(("sig", "delay_s"), CASES, ids=[f"{s.name}-{d}s" for s, d in CASES])
def test_signal_cleans_up_and_keeps_the_partial_result(
    sig: signal.Signals, delay_s: float, runtimes: list[str], tmp_path: Path
) -> None:
    scenario = rel.scenario_file(tmp_path, runtimes, [("sleep", SLEEP_2S)], repetitions=3)
    run_id = f"sig-{sig.name}-{int(delay_s * 100)}-{time.time_ns() % 10**6}"
    started = rel.start_run(scenario, tmp_path / "results", run_id)
    try:
        time.sleep(delay_s)
        assert started.process.poll() is None, f"run ended before the signal:\n{started.stderr()}"
        done_before = _trials_done(started.run_dir)
        started.process.send_signal(sig)
        signalled = time.monotonic()
        started.process.wait(timeout=EXIT_WITHIN_S + 20)
        took_s = time.monotonic() - signalled
        stderr = started.stderr()
        print(f"{sig.name} after {delay_s} s ({done_before} trials done): exit in {took_s:.2f} s")
        assert took_s <= EXIT_WITHIN_S, f"exit took {took_s:.1f} s after {sig.name}:\n{stderr}"
        assert started.process.returncode == 1, stderr
        assert "Traceback" not in stderr
        rel.assert_none_left(run_id, started.process.pid)

        run = load_run(started.run_dir)
        manifest = json.loads((started.run_dir / "manifest.json").read_text())
        assert manifest["status"] == "incomplete"
        assert manifest["leftovers"] == []
        assert len(run.trials) == manifest["trials_done"] >= done_before
        assert set(run.trials["status"]) <= {"ok"}, run.trials[["trial_id", "status", "error"]]
        assert set(run.samples["trial_id"]) <= set(run.trials["trial_id"])
        assert not (started.run_dir / "samples.parts").exists()
        assert not list(started.run_dir.glob(".*.tmp"))
    finally:
        if started.process.poll() is None:
            started.process.kill()
            started.process.wait()
        rel.remove_run_objects(run_id, started.process.pid)


def test_sigkill_then_warning_then_gc(runtimes: list[str], tmp_path: Path) -> None:
    scenario = rel.scenario_file(tmp_path, runtimes, [("sleep", ["/bin/busybox", "sleep", "5"])])
    run_id = f"sigkill-{time.time_ns() % 10**6}"
    started = rel.start_run(scenario, tmp_path / "results", run_id)
    try:
        rel.wait_for_trials(started.run_dir, 1, timeout_s=60)
        time.sleep(random.Random(SEED).uniform(1.0, 3.0))  # somewhere in the second 5 s trial
        started.process.kill()
        started.process.wait(timeout=10)
        left = rel.leftovers(run_id, started.process.pid)
        assert any(left.values()), "SIGKILL mid-trial left nothing: the test missed the trial"
        owners = {"cgroups": "bare", "podman-service": "podman"}
        with_leftovers = sorted({owners.get(kind, kind) for kind, names in left.items() if names})

        quick = rel.scenario_file(tmp_path, with_leftovers, [("true", ["/bin/true"])])
        second = bench(
            "run", str(quick), "--results-dir", str(tmp_path / "results"), "--run-id", "after"
        )
        assert second.returncode == 0, second.stderr
        assert "left by an earlier bench run" in second.stderr
        assert "bench gc" in second.stderr

        gc = _gc_when_no_other_run_is_live()
        assert gc.returncode == 0, gc.stderr
        assert "Traceback" not in gc.stderr
        rel.assert_none_left(run_id, started.process.pid)
        # The killed run stays readable: what it had written is there, status `running`.
        assert json.loads((started.run_dir / "manifest.json").read_text())["status"] == "running"
        load_run(started.run_dir)
    finally:
        if started.process.poll() is None:
            started.process.kill()
        rel.remove_run_objects(run_id, started.process.pid)


@pytest.mark.parametrize("runtime", ["containerd", "systemd-nspawn", "lxc-system", "lxd"])
def test_sigkill_then_gc_removes_what_each_newer_runtime_left(runtime: str, tmp_path: Path) -> None:
    """SIGKILL mid-trial under one runtime of docs/runtimes.md; `bench gc` removes the rest."""
    require_root()
    why_not = rel.answering((runtime,))[runtime]
    require(not why_not, f"{runtime} is not available: {why_not}")
    scenario = rel.scenario_file(tmp_path, [runtime], [("sleep", ["/bin/busybox", "sleep", "20"])])
    run_id = f"sigkill-{runtime}-{time.time_ns() % 10**6}"
    started = rel.start_run(scenario, tmp_path / "results", run_id)
    try:
        rel.wait_for_workload(run_id)
        started.process.kill()
        started.process.wait(timeout=10)
        left = {kind: names for kind, names in rel.leftovers(run_id, started.process.pid).items()}
        # LXC's and LXD's cgroups are their own (lxc.payload.NAME): containers are what is left.
        assert left["cgroups"] or left["lxc"] or left["lxd"], f"SIGKILL left nothing: {left}"
        gc = _gc_when_no_other_run_is_live()
        assert gc.returncode == 0, gc.stderr
        assert "Traceback" not in gc.stderr
        assert f"{runtime}: removed " in gc.stdout, gc.stdout
        rel.assert_none_left(run_id, started.process.pid)
    finally:
        if started.process.poll() is None:
            started.process.kill()
        rel.remove_run_objects(run_id, started.process.pid)


def test_sigkill_then_gc_removes_what_rootless_podman_left(tmp_path: Path) -> None:
    """SIGKILL mid-trial of podman-rootless: its container (in the user's storage), the
    user's io copy bound over the trial's io dir, and the cgroup are left; `bench gc`
    removes them all, and the io dir has the files the workload wrote."""
    require_root()
    why_not = rel.answering(("podman-rootless",))["podman-rootless"]
    require(not why_not, f"podman-rootless is not available: {why_not}")
    argv = ["/bin/busybox", "sh", "-c", "echo written > out.txt; sleep 20"]
    # No [limits]: rootless podman cannot apply them on cgroup v1 (docs/runtimes.md).
    scenario = rel.scenario_file(tmp_path, ["podman-rootless"], [("sleep", argv)], limits=False)
    run_id = f"sigkill-rootless-{time.time_ns() % 10**6}"
    started = rel.start_run(scenario, tmp_path / "results", run_id)
    try:
        rel.wait_for_workload(run_id)
        time.sleep(1.0)  # past the workload's first line
        started.process.kill()
        started.process.wait(timeout=10)
        left = rel.leftovers(run_id, started.process.pid)
        kinds = sorted(kind for kind, names in left.items() if names)
        assert kinds == ["cgroups", "podman-rootless"], left
        # Its container, the user's io copy, and the bind of that copy over the io dir.
        assert len(left["podman-rootless"]) == 3, left
        io_dir = Path(left["podman-rootless"][2])
        gc = _gc_when_no_other_run_is_live()
        assert gc.returncode == 0, gc.stderr
        assert "Traceback" not in gc.stderr
        (removed,) = re.findall(r"podman-rootless: removed (\d+)", gc.stdout)
        assert int(removed) >= 3, gc.stdout  # and the images in the user's storage
        rel.assert_none_left(run_id, started.process.pid)
        # Unmounted, the io dir itself holds what the workload wrote into the user's copy.
        assert (io_dir / "out.txt").read_text() == "written\n"
    finally:
        if started.process.poll() is None:
            started.process.kill()
        rel.remove_run_objects(run_id, started.process.pid)


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_sigkill_then_gc_removes_the_gvisor_sandbox(engine: str, tmp_path: Path) -> None:
    """SIGKILL mid-trial of engine+runsc: `bench gc` removes the container and the sandbox
    (gVisor's Sentry and gofer processes, its state under the runsc root)."""
    require_root()
    why_not = rel.answering((engine,))[engine]
    require(not why_not, f"{engine} is not available: {why_not}")
    engine_runtime = get_runtime(engine)
    try:
        oci = engine_runtime.oci_runtime_available("runsc")  # type: ignore[attr-defined]
    finally:
        engine_runtime.close()
    require(oci.ok, f"{engine}+runsc cannot run: {oci.reason} ({oci.fix})")
    scenario = rel.scenario_file(
        tmp_path, [engine], [("sleep", ["/bin/busybox", "sleep", "60"])], oci_runtimes=("runsc",)
    )
    run_id = f"sigkill-{engine}-runsc-{time.time_ns() % 10**6}"
    started = rel.start_run(scenario, tmp_path / "results", run_id)
    try:
        rel.wait_for_workload(run_id)
        (name,) = rel.leftovers(run_id, -1)[engine]
        container_id = _container_id(engine, name)
        assert _sandbox_pids(container_id), f"no gVisor sandbox runs {name}"
        started.process.kill()
        started.process.wait(timeout=10)
        gc = _gc_when_no_other_run_is_live()
        assert gc.returncode == 0, gc.stderr
        assert "Traceback" not in gc.stderr
        rel.assert_none_left(run_id, started.process.pid)
        assert _sandbox_pids(container_id) == [], "the sandbox outlived bench gc"
    finally:
        if started.process.poll() is None:
            started.process.kill()
        rel.remove_run_objects(run_id, started.process.pid)


def _container_id(engine: str, name: str) -> str:
    argv = [engine, "inspect", "--format", "{{.Id}}", name]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def _sandbox_pids(container_id: str) -> list[int]:
    """gVisor's processes (runsc-sandbox, runsc-gofer, the Sentry) of one container."""
    import psutil

    pids = []
    for process in psutil.process_iter(["cmdline"]):
        args = process.info["cmdline"] or []
        if any("runsc" in arg for arg in args[:1]) and any(container_id in arg for arg in args):
            pids.append(process.pid)
    return sorted(pids)


def _gc_when_no_other_run_is_live(timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """`bench gc`, retried while it refuses because of another run (other sessions on a
    shared host; never in CI, where the suite runs alone)."""
    deadline = time.monotonic() + timeout_s
    while True:
        gc = bench("gc")
        if "in progress" not in gc.stderr or time.monotonic() > deadline:
            return gc
        time.sleep(5)


def test_gc_leaves_a_live_run_alone(tmp_path: Path) -> None:
    require_root()
    scenario = rel.scenario_file(tmp_path, ["bare"], [("sleep", SLEEP_2S)], repetitions=2)
    run_id = f"live-{time.time_ns() % 10**6}"
    started = rel.start_run(scenario, tmp_path / "results", run_id)
    try:
        rel.wait_for_workload(run_id)
        gc = bench("gc")
        assert gc.returncode == 1, gc.stdout + gc.stderr
        assert f"{run_id} (pid {started.process.pid})" in gc.stderr
        assert "--force" in gc.stderr and "Traceback" not in gc.stderr
        out, _ = started.process.communicate(timeout=60)
        assert started.process.returncode == 0, started.stderr()
        assert json.loads(out)["status"] == "complete"
        assert set(load_run(started.run_dir).trials["status"]) == {"ok"}
    finally:
        if started.process.poll() is None:
            started.process.kill()
        rel.remove_run_objects(run_id, started.process.pid)
