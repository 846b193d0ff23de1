"""A runtime's daemon dies mid-run: the trial in flight fails with the reason, the run goes on.

- dockerd killed (SIGKILL): the docker trial in flight is `failed`, docker is given up for
  the rest of the run (its remaining trials `skipped` with the reason), bare trials all
  run; the run ends `incomplete` (exit 1) so `bench run --resume` can finish it later.
- bench's private podman service killed: that trial is `failed`, bench starts the service
  again on the same socket, removes the trial's container through it, and the other
  podman trials run; the run ends `complete` (exit 0).

dockerd is shared by every test: it is restarted in a `finally` (scripts/start-services.sh)
and the test waits until it answers again.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psutil

from bench.analysis import load_run
from tests.conftest import require
from tests.e2e import reliability as rel

SLEEP_2S = ["/bin/busybox", "sleep", "2"]
RUN_TIMEOUT_S = 120


def _wait_for_container(kind: str, run_id: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        names = rel.leftovers(run_id, -1)[kind]
        if names:
            return names[0]
        time.sleep(0.1)
    raise AssertionError(f"no {kind} container of {run_id} started within {timeout_s} s")


def _finish(started: rel.Started) -> tuple[int, dict[str, object], str]:
    out, _ = started.process.communicate(timeout=RUN_TIMEOUT_S)
    stderr = started.stderr()
    assert "Traceback" not in stderr
    assert "internal error" not in stderr
    return started.process.returncode, json.loads(out), stderr


def _restart_services() -> None:
    done = subprocess.run(
        ["bash", str(rel.REPO / "scripts" / "start-services.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"could not restart the services: {done.stdout}{done.stderr}"


def test_dockerd_killed_mid_run(tmp_path: Path) -> None:
    require("docker" in rel.available_runtimes(), "docker is not available")
    scenario = rel.scenario_file(tmp_path, ["bare", "docker"], [("sleep", SLEEP_2S)], repetitions=3)
    run_id = f"dockerd-{time.time_ns() % 10**6}"
    started = rel.start_run(scenario, tmp_path / "results", run_id)
    try:
        container = _wait_for_container("docker", run_id)
        dockerd = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "dockerd"]
        assert len(dockerd) == 1, dockerd
        dockerd[0].kill()
        code, out, stderr = _finish(started)
    finally:
        if started.process.poll() is None:
            started.process.kill()
        _restart_services()
        rel.remove_run_objects(run_id, started.process.pid)

    assert code == 1, stderr
    assert out["status"] == "incomplete"
    trials = load_run(started.run_dir).trials.set_index("trial_id")
    docker = trials[trials["runtime"] == "docker"]
    bare = trials[trials["runtime"] == "bare"]
    assert list(bare["status"]) == ["ok"] * 3, bare[["status", "error"]]
    failed = docker[docker["status"] == "failed"]
    assert len(failed) == 1, docker[["status", "error"]]
    assert "docker failed" in failed["error"].iloc[0]
    assert container.split("-")[2] == failed.index[0][:4]  # the trial whose daemon died
    later = docker[docker.index > failed.index[0]]
    assert set(later["status"]) == {"skipped"}, later[["status", "error"]]
    assert all("gave up during the run" in e for e in later["error"])
    print(f"docker: {failed['error'].iloc[0]} | then: {later['error'].iloc[0]}")
    manifest = json.loads((started.run_dir / "manifest.json").read_text())
    assert "gave up during the run" in manifest["runtimes"]["docker"]["reason"]
    # Not removable while dockerd was down: named in the manifest and on stderr, for `bench gc`.
    assert [entry.split()[0] for entry in manifest["leftovers"]] == [container]
    assert "could not be removed" in stderr
    assert "gave up during the run" in stderr


def _private_podman_service(bench_pid: int, timeout_s: float = 30) -> psutil.Process:
    deadline = time.monotonic() + timeout_s
    marker = f"bench-podman-{bench_pid}-"
    while time.monotonic() < deadline:
        for process in psutil.process_iter(["cmdline"]):
            if any(marker in arg for arg in process.info["cmdline"] or []):
                return process
        time.sleep(0.1)
    require(False, "bench uses the shared podman service here, not a private one")
    raise AssertionError("unreachable")


def test_podman_service_killed_mid_run(tmp_path: Path) -> None:
    require("podman" in rel.available_runtimes(), "podman is not available")
    scenario = rel.scenario_file(tmp_path, ["bare", "podman"], [("sleep", SLEEP_2S)], repetitions=3)
    run_id = f"podsvc-{time.time_ns() % 10**6}"
    started = rel.start_run(scenario, tmp_path / "results", run_id)
    try:
        container = _wait_for_container("podman", run_id)
        service = _private_podman_service(started.process.pid)
        service.kill()
        code, out, stderr = _finish(started)
        rel.assert_none_left(run_id, started.process.pid)
    finally:
        if started.process.poll() is None:
            started.process.kill()
        rel.remove_run_objects(run_id, started.process.pid)

    assert code == 0, stderr
    assert out["status"] == "complete"
    trials = load_run(started.run_dir).trials.set_index("trial_id")
    podman = trials[trials["runtime"] == "podman"]
    failed = podman[podman["status"] == "failed"]
    assert len(failed) == 1, podman[["status", "error"]]
    assert failed.index[0][:4] == container.split("-")[2]
    print("podman trial:", failed["error"].iloc[0])
    assert "podman failed" in failed["error"].iloc[0]
    assert list(podman[podman.index != failed.index[0]]["status"]) == ["ok"] * 2
    assert list(trials[trials["runtime"] == "bare"]["status"]) == ["ok"] * 3
