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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.analysis import load_run
from tests.e2e import reliability as rel
from tests.helpers import REPO, require

SLEEP_2S = ["/bin/busybox", "sleep", "2"]
RUN_TIMEOUT_S = 120


def _wait_for_running_container(kind: str, run_id: str, timeout_s: float = 60) -> str:
    """The name of the run's first running container; then a moment, so its trial is in
    the wait (a daemon dying half-way through a create is another case, see the report)."""
    prefix = rel.object_prefix(run_id)
    argv = [kind, "ps", "--filter", "status=running", "--format", "{{.Names}}"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        names = subprocess.run(argv, capture_output=True, text=True, check=False).stdout.split()
        running = [name for name in names if name.startswith(prefix)]
        if running:
            time.sleep(0.5)
            return running[0]
        time.sleep(0.1)
    raise AssertionError(f"no {kind} container of {run_id} ran within {timeout_s} s")


def _finish(started: rel.Started) -> tuple[int, dict[str, object], str]:
    out, _ = started.process.communicate(timeout=RUN_TIMEOUT_S)
    stderr = started.stderr()
    assert "Traceback" not in stderr
    assert "internal error" not in stderr
    return started.process.returncode, json.loads(out), stderr


def _restart_services() -> None:
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "start-services.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"could not restart the services: {done.stdout}{done.stderr}"


@dataclass
class _Faulted:
    """A bare + RUNTIME run whose daemon was killed during RUNTIME's first trial."""

    started: rel.Started
    container: str
    code: int
    out: dict[str, object]
    stderr: str
    left: dict[str, list[str]]


def _kill_mid_run(
    tmp_path: Path, runtime: str, kill: Callable[[int], None], restore: Callable[[], None]
) -> _Faulted:
    require(runtime in rel.available_runtimes(), f"{runtime} is not available")
    scenario = rel.scenario_file(tmp_path, ["bare", runtime], [("sleep", SLEEP_2S)], repetitions=3)
    run_id = f"{runtime}-fault-{time.time_ns() % 10**6}"
    started = rel.start_run(scenario, tmp_path / "results", run_id)
    try:
        container = _wait_for_running_container(runtime, run_id)
        kill(started.process.pid)
        code, out, stderr = _finish(started)
        left = rel.leftovers(run_id, started.process.pid)
    finally:
        if started.process.poll() is None:
            started.process.kill()
        restore()
        rel.remove_run_objects(run_id, started.process.pid)
    return _Faulted(started, container, code, out, stderr, left)


def _kill_dockerd(_bench_pid: int) -> None:
    dockerd = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "dockerd"]
    assert len(dockerd) == 1, dockerd
    dockerd[0].kill()


def test_dockerd_killed_mid_run(tmp_path: Path) -> None:
    fault = _kill_mid_run(tmp_path, "docker", _kill_dockerd, _restart_services)
    code, out, stderr, started, container = (
        fault.code, fault.out, fault.stderr, fault.started, fault.container
    )  # fmt: skip
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


def _kill_private_podman_service(bench_pid: int) -> None:
    _private_podman_service(bench_pid).kill()


def test_podman_service_killed_mid_run(tmp_path: Path) -> None:
    fault = _kill_mid_run(tmp_path, "podman", _kill_private_podman_service, lambda: None)
    code, out, stderr, started, container = (
        fault.code, fault.out, fault.stderr, fault.started, fault.container
    )  # fmt: skip
    # The service came back on the same socket, so the failed trial's container was removed.
    assert not any(fault.left.values()), fault.left
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
