"""Fleet results (bench.fleet_store), their frames, and the parts of `bench fleet` that need
no hosts: inventories, the source bench ships to hosts, SSH options, the remote stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import bench
from bench import fleet, fleet_remote
from bench.analysis import load_run
from bench.cli import main
from bench.compare import compare_fleets
from bench.errors import InputError
from bench.fleet_store import FLEET_MANIFEST, FleetManifest, HostEntry, expand_runs, host_dir
from bench.gc import live_runs
from tests.storegen import StoreSpec, write_fleet


def _manifest(**hosts: HostEntry) -> FleetManifest:
    return FleetManifest(
        fleet_id="fleet-x", status="incomplete", scenario_name="synthetic",
        scenario_sha256="ab" * 32, quick=True, runtimes=["bare"], bench_version="0.1.0",
        bench_source_sha256="cd" * 32, git_commit=None, inventory="inv.yml", limit="",
        started_at="2025-01-01T00:00:00+00:00", hosts=dict(hosts),
    )  # fmt: skip


def _fleet_dir(tmp_path: Path, statuses: dict[str, str]) -> Path:
    """A fleet result whose complete hosts hold a generated run (a host name as hostname)."""
    specs = {
        name: StoreSpec(
            run_id=f"fleet-x.{name}",
            runtimes=("bare", "docker"),
            repetitions=3,
            hostname=f"machine-{name}",
            seed=i,
        )
        if status == "complete"
        else None
        for i, (name, status) in enumerate(statuses.items())
    }
    return write_fleet(tmp_path, "fleet-x", specs)


def test_manifest_round_trip_and_unfinished_hosts(tmp_path: Path) -> None:
    manifest = _manifest(
        a=HostEntry(status="complete", run_id="fleet-x.a"),
        b=HostEntry(status="unreachable", reason="No route to host", run_id="fleet-x.b"),
    )
    manifest.save(tmp_path)
    back = FleetManifest.load(tmp_path)
    assert back == manifest
    assert back.unfinished() == ["b"]


def test_damaged_or_missing_manifest_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a fleet result"):
        FleetManifest.load(tmp_path)
    (tmp_path / FLEET_MANIFEST).write_text('{"fleet_id": 1}')
    with pytest.raises(InputError, match="damaged"):
        FleetManifest.load(tmp_path)


def test_load_run_of_a_fleet_has_one_group_per_host_that_finished(tmp_path: Path) -> None:
    fleet_dir = _fleet_dir(tmp_path, {"h1": "complete", "h2": "complete", "h3": "unreachable"})
    run = load_run(fleet_dir)
    assert sorted(run.trials["host"].unique()) == ["h1", "h2"]
    assert sorted(run.samples["host"].unique()) == ["h1", "h2"]
    assert sorted(run.run_ids) == ["fleet-x.h1", "fleet-x.h2"]
    for name, group in run.trials.groupby("host"):
        single = load_run(host_dir(fleet_dir, str(name)))
        assert len(group) == len(single.trials)
        assert set(group["run_id"]) == {f"fleet-x.{name}"}
    host_of_run = {m.run_id: m.host.hostname for m in run.manifests.values() if m.host}
    assert host_of_run == {"fleet-x.h1": "machine-h1", "fleet-x.h2": "machine-h2"}


def test_load_run_of_a_fleet_without_any_run_is_an_input_error(tmp_path: Path) -> None:
    fleet_dir = _fleet_dir(tmp_path, {"h1": "unreachable"})
    with pytest.raises(InputError, match="no host"):
        load_run(fleet_dir)


def test_inventory_hosts_and_limit(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yml"
    data = {"all": {"children": {"lab": {"hosts": {"web1": {}, "web2": {}}},
                                 "db": {"hosts": {"db1": {}}}}}}  # fmt: skip
    inventory.write_text(yaml.safe_dump(data))
    assert sorted(fleet.inventory_hosts(inventory, None)) == ["db1", "web1", "web2"]
    assert sorted(fleet.inventory_hosts(inventory, "lab")) == ["web1", "web2"]
    assert fleet.inventory_hosts(inventory, "web*:!web1") == ["web2"]
    with pytest.raises(InputError, match="no hosts matching"):
        fleet.inventory_hosts(inventory, "nosuch")
    with pytest.raises(InputError, match="no such inventory"):
        fleet.inventory_hosts(tmp_path / "missing.yml", None)


def test_source_tarball_holds_what_a_host_installs(tmp_path: Path) -> None:
    first = fleet.source_tarball(tmp_path / "a.tar.gz")
    assert first == fleet.source_tarball(tmp_path / "b.tar.gz")
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        names = set(tar.getnames())
    needed = {"pyproject.toml", "scripts/setup-venv.sh", "bench/fleet_remote.py",
              "bench/playbooks/run.yml", "scenarios/smoke.toml"}  # fmt: skip
    assert needed <= names
    assert not [n for n in names if n.startswith(("tests/", ".venv", "results/"))]


def test_ssh_options_never_share_connections_and_notice_a_dead_host(tmp_path: Path) -> None:
    options = fleet.FleetOptions(inventory=tmp_path / "inv", keepalive_s=4, keepalive_count=2)
    args = fleet._ssh_args(options, tmp_path / "known_hosts").split()
    assert "ControlMaster=no" in args and "ControlPersist=no" in args
    assert "ServerAliveInterval=4" in args and "ServerAliveCountMax=2" in args
    assert "StrictHostKeyChecking=accept-new" in args
    assert f"UserKnownHostsFile={tmp_path / 'known_hosts'}" in args


def test_remote_stop_interrupts_the_run_of_that_id_only(tmp_path: Path) -> None:
    """A registered run (as `bench run` registers itself) gets SIGINT and ends; another
    run id is left alone."""
    script = (
        "import sys, time\nfrom bench.gc import registered\n"
        "with registered(sys.argv[1]):\n    print('up', flush=True)\n    time.sleep(60)\n"
    )
    procs = {
        run_id: subprocess.Popen([sys.executable, "-c", script, run_id], stdout=subprocess.PIPE)
        for run_id in (f"fleet-t{os.getpid()}.a", f"fleet-t{os.getpid()}.b")
    }
    try:
        for proc in procs.values():
            assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        target, other = procs
        stopped = fleet_remote.stop(target, grace_s=10)
        assert stopped == [{"pid": procs[target].pid, "killed": False}]
        assert procs[target].wait(5) != 0
        assert procs[other].poll() is None
        assert [r.run_id for r in live_runs() if r.run_id in procs] == [other]
        assert fleet_remote.stop(f"fleet-t{os.getpid()}.none") == []
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(5)


def _host_spec(fleet_id: str, host: str, seed: int, **kwargs: object) -> StoreSpec:
    settings: dict[str, object] = {"repetitions": 10, "noise": 0.02, "trial_duration_s": 1.0}
    settings.update(sample_hz=2.0, runtimes=("bare", "docker"), **kwargs)
    return StoreSpec(run_id=f"{fleet_id}.{host}", seed=seed, hostname=host, **settings)  # type: ignore[arg-type]


def test_compare_two_fleets_host_by_host(tmp_path: Path) -> None:
    """docker got 10 % slower on h1 only: h1 is flagged, h2 not; h3 (new only) is left out."""
    base = write_fleet(tmp_path, "base", {
        "h1": _host_spec("base", "h1", 1), "h2": _host_spec("base", "h2", 2),
    })  # fmt: skip
    new = write_fleet(tmp_path, "new", {
        "h1": _host_spec("new", "h1", 3, throughput_factor={"docker": 0.90}),
        "h2": _host_spec("new", "h2", 4), "h3": _host_spec("new", "h3", 5),
    })  # fmt: skip
    fleet_cmp = compare_fleets(base, new, threshold_pct=5.0)
    assert list(fleet_cmp.by_host) == ["h1", "h2"]
    assert fleet_cmp.left_out == {"h3": f"no run in {base}"}
    assert {(c.runtime, c.metric) for c in fleet_cmp.by_host["h1"].regressions} == {
        ("docker", "throughput")
    }
    assert not fleet_cmp.by_host["h2"].has_regression
    result = CliRunner().invoke(main, ["compare", str(base), str(new), "--markdown"])
    assert result.exit_code == 1, result.output
    assert "## host h1" in result.output and "## host h2" in result.output
    assert "host h3 not compared" in result.output
    same = CliRunner().invoke(main, ["compare", str(base), str(base)])
    assert same.exit_code == 0, same.output
    mixed = CliRunner().invoke(main, ["compare", str(base), str(new / "hosts" / "h1")])
    assert mixed.exit_code == 2


def test_report_of_a_fleet_shows_every_host_side_by_side(tmp_path: Path) -> None:
    fleet_dir = _fleet_dir(tmp_path, {"h1": "complete", "h2": "complete", "h3": "unreachable"})
    assert expand_runs([fleet_dir]) == [host_dir(fleet_dir, "h1"), host_dir(fleet_dir, "h2")]
    out = tmp_path / "report"
    result = CliRunner().invoke(
        main, ["report", str(fleet_dir), "--out", str(out), "--format", "md"]
    )
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    assert "Overhead side by side" in text
    assert "## Run `fleet-x.h1`" in text and "## Run `fleet-x.h2`" in text
    assert "machine-h1" in text and "machine-h2" in text


def test_fleet_run_refuses_bad_input_before_any_host_is_touched(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"h1": {}, "h2": {}}}}))
    smoke = ["fleet", "run", "smoke", "--results-dir", str(tmp_path / "results")]
    missing = CliRunner().invoke(main, [*smoke, "--inventory", str(tmp_path / "none.yml")])
    assert missing.exit_code == 2
    assert "no such inventory" in missing.output
    nobody = CliRunner().invoke(main, [*smoke, "--inventory", str(inventory), "--limit", "x*"])
    assert nobody.exit_code == 2
    # --resume needs the fleet's own scenario file and plan size.
    fleet_dir = _fleet_dir(tmp_path, {"h1": "complete", "h2": "unreachable"})
    other = CliRunner().invoke(
        main, [*smoke, "--inventory", str(inventory), "--resume", str(fleet_dir)]
    )
    assert other.exit_code == 2
    assert "another scenario file" in other.output
    assert FleetManifest.load(fleet_dir).hosts["h2"].status == "unreachable"


def test_remote_begin_checks_the_version_and_starts_the_run_directory_afresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_root = tmp_path / "runs" / "fleet-x"
    run_id = f"fleet-t{os.getpid()}.begin"
    assert fleet_remote.main(["begin", run_id, str(run_root), "0.0.0-other"]) == 3
    assert "0.0.0-other" in capsys.readouterr().err
    assert not run_root.exists()
    assert fleet_remote.main(["begin", run_id, str(run_root), bench.__version__]) == 0
    (run_root / "earlier.txt").write_text("an earlier attempt")
    assert fleet_remote.main(["begin", run_id, str(run_root), bench.__version__]) == 0
    assert list(run_root.iterdir()) == []
    assert fleet_remote.main(["stop", run_id, str(run_root)]) == 0
    assert not run_root.exists()
    assert fleet_remote.main(["stop"]) == 2
