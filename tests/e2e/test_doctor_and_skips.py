"""`bench doctor` and what a run does with a runtime that is not there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.analysis import load_run
from bench.runtimes import registry
from tests.helpers import bench, require, require_root

NO_DAEMON = "unix:///nonexistent/bench-test-docker.sock"

SCENARIO = """\
name = "bench-e2e-skip"
runtimes = ["bare", "docker"]
repetitions = 2
warmups = 0
timeout_s = 30

[[workloads]]
name = "noop"
command = ["/bin/true"]
"""


def test_doctor_reports_host_cgroups_and_every_runtime() -> None:
    require_root()
    done = bench("doctor", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["host"]["cgroup_version"] in ("v1", "v2", "hybrid")
    assert {"cpu", "memory", "pids"} <= set(report["controllers"])
    assert report["can_create_cgroups"] is True, report["cgroup_detail"]
    checks = {check["name"]: check for check in report["runtimes"]}
    assert set(checks) == set(registry.names())
    for name, check in checks.items():
        require(check["available"], f"{name} unavailable: {check['reason']} {check['fix']}")
        assert check["version"], name
    for engine in ("docker", "podman"):
        assert checks[engine]["default_oci_runtime"] in ("runc", "crun"), checks[engine]
    if report["host"]["cgroup_version"] == "hybrid":
        # crun refuses hybrid hosts (docs/host-notes.md): the working default must be runc.
        assert checks["podman"]["default_oci_runtime"] == "runc"
    unsupported = {u["name"]: u["reason"] for u in report["unsupported"]}
    assert {"kubernetes", "cri-o", "pouch"} <= set(unsupported)
    assert all("Debian 12" in reason for reason in unsupported.values()), unsupported
    tools = {tool["name"]: tool for tool in report["tools"]}
    assert "nginx-static server" in tools and "postgres server" in tools
    for name, tool in tools.items():
        assert tool["available"] or tool["fix"].startswith("apt-get install "), tool
        require(tool["available"], f"{name}: {tool['missing']} missing; {tool['fix']}")


def test_doctor_says_why_docker_is_missing_and_how_to_fix_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_DAEMON)
    done = bench("doctor", "--json")
    assert done.returncode == 0, done.stderr
    docker = next(c for c in json.loads(done.stdout)["runtimes"] if c["name"] == "docker")
    assert docker["available"] is False
    assert "nonexistent" in docker["reason"] or "answer" in docker["reason"], docker
    assert "dockerd" in docker["fix"]
    plain = bench("doctor")
    assert plain.returncode == 0 and "fix:" in plain.stdout


def test_doctor_says_why_lxd_is_missing_and_how_to_fix_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # LXD's client finds the daemon's socket under LXD_DIR: an empty directory has none.
    monkeypatch.setenv("LXD_DIR", str(tmp_path))
    done = bench("doctor", "--json")
    assert done.returncode == 0, done.stderr
    lxd = next(c for c in json.loads(done.stdout)["runtimes"] if c["name"] == "lxd")
    assert lxd["available"] is False, lxd
    if lxd["fix"] != "apt-get install lxd":  # installed, so the daemon is what is missing
        assert "does not answer" in lxd["reason"] and str(tmp_path) in lxd["reason"], lxd
        assert "start-services.sh" in lxd["fix"], lxd


def test_a_missing_runtime_is_skipped_with_its_reason_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_root()
    monkeypatch.setenv("DOCKER_HOST", NO_DAEMON)
    scenario = tmp_path / "skip.toml"
    scenario.write_text(SCENARIO)
    done = bench("run", str(scenario), "--results-dir", str(tmp_path / "results"))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "skipping docker" in done.stderr
    assert "skipped docker" in done.stdout  # the summary says it too
    assert "Overhead vs bare metal" in done.stdout and "ratio to bare" in done.stdout
    run_dir = next((tmp_path / "results").iterdir())
    run = load_run(run_dir)
    docker = run.manifest.runtimes["docker"]
    assert docker.available is False and "Fix:" in docker.reason
    by_runtime = run.trials.groupby("runtime")["status"].agg(set)
    assert by_runtime["bare"] == {"ok"}
    assert by_runtime["docker"] == {"skipped"}
    skipped = run.trials[run.trials["runtime"] == "docker"]
    assert skipped["error"].str.contains("Fix:").all()


def test_a_run_whose_only_runtime_is_missing_fails_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing measured for a reason of the host's: not `complete` with exit 0."""
    monkeypatch.setenv("DOCKER_HOST", NO_DAEMON)
    scenario = tmp_path / "docker-only.toml"
    scenario.write_text(SCENARIO.replace('["bare", "docker"]', '["docker"]'))
    done = bench("run", str(scenario), "--results-dir", str(tmp_path / "results"), "--json")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    out = json.loads(done.stdout)
    assert out["status"] == "failed"
    assert "none of the 2 measured trial(s) ran" in out["failure"]
    assert NO_DAEMON.removeprefix("unix://") in out["failure"]
    assert f"error: {out['failure']}" in done.stderr
    run = load_run(Path(out["run_dir"]))
    assert run.manifest.status == "failed" and run.manifest.failure == out["failure"]
