"""`bench fleet run` over SSH on network-namespace hosts (tests/fleethosts.py).

Each host is its own network and UTS namespace with its own sshd; bench is installed there
by the playbooks and runs a quick bare-metal scenario. Traffic goes only to those namespaces.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.analysis import load_run
from bench.fleet_store import FleetManifest
from bench.gc import live_runs
from bench.naming import object_prefix
from tests.fleethosts import SSHD, Lab, make_lab
from tests.helpers import REPO, bench, require, require_root

FLEET_TIMEOUT_S = 150
QUICK_BARE = ("smoke", "--quick", "--runtime", "bare", "--ssh-keepalive", "1")
# One long bare-metal trial: a fleet run is surely mid-trial when it is interrupted.
SLEEPER = """\
name = "fleet-sleeper"
runtimes = ["bare"]
repetitions = 1
warmups = 0
timeout_s = 90

[[workloads]]
name = "sleep"
command = ["/bin/sleep", "60"]
"""


@pytest.fixture
def lab(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Lab]:
    require_root()
    require(Path(SSHD).exists(), "openssh-server is not installed (sshd)")
    require(shutil.which("stress-ng") is not None, "stress-ng is not installed")
    # Every lab has new host keys on the same addresses: a known_hosts of its own.
    monkeypatch.setenv("BENCH_FLEET_KNOWN_HOSTS", str(tmp_path / "known_hosts"))
    made = make_lab(tmp_path / "lab", int(getattr(request, "param", 2)))
    try:
        yield made
    finally:
        made.close()


def fleet_argv(lab: Lab, results: Path, *args: str) -> list[str]:
    inventory = lab.root / "inventory.yml"
    if not inventory.exists():
        lab.inventory(sys.executable)
    return ["fleet", "run", *args, "--inventory", str(inventory),
            "--results-dir", str(results), "--json"]  # fmt: skip


def start_fleet(lab: Lab, results: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench", *fleet_argv(lab, results, *args)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def fleet_run(lab: Lab, results: Path, *args: str) -> tuple[int, dict[str, object], str]:
    done = bench(*fleet_argv(lab, results, *args), timeout_s=FLEET_TIMEOUT_S)
    out = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, out, done.stderr


def assert_nothing_left(lab: Lab, manifest: FleetManifest) -> None:
    """No bench run of this fleet alive, no run files on any host."""
    run_ids = {entry.run_id for entry in manifest.hosts.values()}
    assert not [run for run in live_runs() if run.run_id in run_ids]
    for h in lab.hosts:
        assert not (lab.root / f"home-{h.name}" / "runs" / manifest.fleet_id).exists()
    prefixes = tuple(object_prefix(run_id) for run_id in run_ids)
    cgroups = [
        os.path.join(top, name)
        for top, dirs, _ in os.walk("/sys/fs/cgroup")
        if top.count("/") <= 5
        for name in dirs
        if name.startswith(prefixes)
    ]
    assert not cgroups


def assert_no_secret(lab: Lab, fleet_dir: Path) -> None:
    secret = lab.key.read_text().splitlines()[1]
    for path in fleet_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("lab", [3], indirect=True)
def test_lost_hosts_are_recorded_and_resume_finishes_only_them(lab: Lab, tmp_path: Path) -> None:
    """h2 is unreachable from the start, h3 vanishes while bench runs there; h1 completes.
    Back on the network, --resume redoes h2 and h3 only; the merged frame has every host."""
    results = tmp_path / "results"
    lab.cut("h2")
    proc = start_fleet(lab, results, *QUICK_BARE, "--fleet-id", "f2")
    assert proc.stderr is not None
    stderr = []
    for line in proc.stderr:
        stderr.append(line)
        if line.startswith("h3: run - bench run"):
            lab.cut("h3")
            break
    out_text, rest = proc.communicate(timeout=FLEET_TIMEOUT_S)
    stderr_text = "".join(stderr) + rest
    assert proc.returncode == 1, stderr_text
    assert json.loads(out_text)["status"] == "incomplete"
    fleet_dir = results / "f2"
    first = FleetManifest.load(fleet_dir)
    assert first.hosts["h1"].status == "complete"
    assert first.hosts["h2"].status == "unreachable"
    assert first.hosts["h3"].status == "unreachable"
    for name in ("h2", "h3"):
        assert "ssh" in first.hosts[name].reason, first.hosts[name].reason
    assert set(load_run(fleet_dir).trials["host"]) == {"h1"}
    h1_trials = (fleet_dir / "hosts" / "h1" / "trials.parquet").stat().st_mtime_ns

    lab.restore("h2")
    lab.restore("h3")
    code, out, stderr_text = fleet_run(lab, results, *QUICK_BARE, "--resume", str(fleet_dir))
    assert code == 0, stderr_text
    assert out["status"] == "complete"
    done = FleetManifest.load(fleet_dir)
    assert {n: (e.status, e.attempts) for n, e in done.hosts.items()} == {
        "h1": ("complete", 1), "h2": ("complete", 2), "h3": ("complete", 2),
    }  # fmt: skip
    assert "h1: running" not in stderr_text
    assert (fleet_dir / "hosts" / "h1" / "trials.parquet").stat().st_mtime_ns == h1_trials
    smoke = (REPO / "scenarios" / "smoke.toml").read_bytes()
    assert done.scenario_sha256 == hashlib.sha256(smoke).hexdigest()

    run = load_run(fleet_dir)
    assert set(run.samples["host"]) == {"h1", "h2", "h3"}
    for name, group in run.trials.groupby("host"):
        host_run = load_run(fleet_dir / "hosts" / str(name))
        # The run happened on that host (its own UTS namespace), through SSH.
        assert host_run.manifest.host is not None
        assert host_run.manifest.host.hostname == lab.host(str(name)).hostname
        assert done.hosts[str(name)].hostname == lab.host(str(name)).hostname
        assert len(group) == host_run.manifest.trials_planned > 0
        assert (group["status"] == "ok").all()
        assert set(group["runtime"]) == {"bare"}
    assert_nothing_left(lab, done)
    assert_no_secret(lab, fleet_dir)


def test_sigint_stops_every_host_and_leaves_nothing_behind(lab: Lab, tmp_path: Path) -> None:
    import psutil

    scenario = tmp_path / "sleeper.toml"
    scenario.write_text(SLEEPER)
    results = tmp_path / "results"
    proc = start_fleet(lab, results, str(scenario), "--fleet-id", "f3")
    assert proc.stderr is not None
    running: set[str] = set()
    run_ids = {"f3.h1", "f3.h2"}
    for line in proc.stderr:
        if ": run - bench run" in line:
            running.add(line.split(":")[0])
        if running == {"h1", "h2"}:
            break
    # Both hosts' bench runs have registered (they are mid-trial) before the signal.
    deadline = time.monotonic() + 30
    while {r.run_id for r in live_runs()} & run_ids != run_ids:
        assert time.monotonic() < deadline, "the hosts' bench runs did not start"
        time.sleep(0.2)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children  # ansible-playbook and its ssh
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr_text = proc.communicate(timeout=FLEET_TIMEOUT_S)
    assert proc.returncode == 130, stderr_text
    # Well before the 60 s trial would have ended by itself.
    assert time.monotonic() - started < 30
    manifest = FleetManifest.load(results / "f3")
    assert manifest.status == "interrupted"
    assert {e.status for e in manifest.hosts.values()} == {"interrupted"}
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert_nothing_left(lab, manifest)


@pytest.mark.parametrize("lab", [1], indirect=True)
def test_a_host_past_its_deadline_is_stopped_and_cleaned_up(lab: Lab, tmp_path: Path) -> None:
    """A host that would take 60 s more is given up at --host-timeout, not waited for."""
    scenario = tmp_path / "sleeper.toml"
    scenario.write_text(SLEEPER)
    timeout_s = 12
    started = time.monotonic()
    code, out, stderr_text = fleet_run(
        lab, tmp_path / "results", str(scenario), "--host-timeout", str(timeout_s)
    )
    elapsed_s = time.monotonic() - started
    assert code == 1, stderr_text
    manifest = FleetManifest.load(Path(str(out["fleet_dir"])))
    entry = manifest.hosts["h1"]
    assert entry.status == "timeout", entry
    assert "deadline" in entry.reason
    # The deadline, then the clean-up on the host (well under the 60 s sleep it cut short).
    assert elapsed_s < timeout_s + 30, stderr_text
    assert_nothing_left(lab, manifest)
