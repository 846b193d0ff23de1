"""`bench fleet run` over SSH on network-namespace hosts (tests/fleethosts.py).

Each host is its own network and UTS namespace with its own sshd; bench is installed there
by the playbooks and runs a quick bare-metal scenario. Traffic goes only to those namespaces.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.analysis import load_run
from bench.fleet_store import FleetManifest
from bench.gc import live_runs
from tests.fleethosts import SSHD, Lab, make_lab
from tests.helpers import REPO, bench, require, require_root

FLEET_TIMEOUT_S = 150
QUICK_BARE = ("smoke", "--quick", "--runtime", "bare")


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    require_root()
    require(Path(SSHD).exists(), "openssh-server is not installed (sshd)")
    require(shutil.which("stress-ng") is not None, "stress-ng is not installed")
    # Every lab has new host keys on the same addresses: a known_hosts of its own.
    monkeypatch.setenv("BENCH_FLEET_KNOWN_HOSTS", str(tmp_path / "known_hosts"))
    made = make_lab(tmp_path / "lab", 2)
    try:
        yield made
    finally:
        made.close()


def fleet_run(lab: Lab, results: Path, *args: str) -> tuple[int, dict[str, object], str]:
    done = bench(
        "fleet", "run", *args, "--inventory", str(lab.inventory(sys.executable)),
        "--results-dir", str(results), "--json", timeout_s=FLEET_TIMEOUT_S,
    )  # fmt: skip
    out = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, out, done.stderr


def assert_nothing_left(lab: Lab, manifest: FleetManifest) -> None:
    """No bench run of this fleet alive, no run files on any host."""
    run_ids = {entry.run_id for entry in manifest.hosts.values()}
    assert not [run for run in live_runs() if run.run_id in run_ids]
    for h in lab.hosts:
        assert not (lab.root / f"home-{h.name}" / "runs" / manifest.fleet_id).exists()


def assert_no_secret(lab: Lab, fleet_dir: Path) -> None:
    secret = lab.key.read_text().splitlines()[1]
    for path in fleet_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_two_hosts_give_one_frame_with_a_group_per_host(lab: Lab, tmp_path: Path) -> None:
    code, out, stderr = fleet_run(lab, tmp_path / "results", *QUICK_BARE, "--fleet-id", "f1")
    assert code == 0, stderr
    fleet_dir = Path(str(out["fleet_dir"]))
    manifest = FleetManifest.load(fleet_dir)
    assert manifest.status == "complete"
    assert {n: e.status for n, e in manifest.hosts.items()} == {"h1": "complete", "h2": "complete"}
    smoke = (REPO / "scenarios" / "smoke.toml").read_bytes()
    assert manifest.scenario_sha256 == hashlib.sha256(smoke).hexdigest()
    # Progress per host on stderr.
    assert "h1: run - bench run" in stderr and "h2: run - bench run" in stderr

    run = load_run(fleet_dir)
    trials = run.trials
    assert set(trials["host"]) == {"h1", "h2"}
    assert set(run.samples["host"]) == {"h1", "h2"}
    for name, group in trials.groupby("host"):
        host_run = load_run(fleet_dir / "hosts" / str(name))
        # The run happened on that host (its own UTS namespace), through SSH.
        assert host_run.manifest.host is not None
        assert host_run.manifest.host.hostname == lab.host(str(name)).hostname
        assert manifest.hosts[str(name)].hostname == lab.host(str(name)).hostname
        assert len(group) == host_run.manifest.trials_planned > 0
        assert (group["status"] == "ok").all()
        assert set(group["runtime"]) == {"bare"}
    assert_nothing_left(lab, manifest)
    assert_no_secret(lab, fleet_dir)
