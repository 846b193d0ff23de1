"""Scenario key `user`: workloads run as that user (no supplementary groups) under every runtime.

The container defaults (no capabilities, no new privileges, read-only rootfs, network
off) are checked per runtime by tests/integration/test_container_contract.py (EXIT_CASES'
read-only touch, test_network_is_off_and_workdir_is_the_io_dir) and by
tests.helpers.check_hardening in each runtime's own module.
"""

from __future__ import annotations

import json
import pwd
from pathlib import Path

import pytest

from bench.analysis import load_run
from tests.e2e import reliability as rel
from tests.helpers import bench, require_root

ID_ARGV = ["/bin/busybox", "sh", "-c", "id -u; id -g; id -G; touch mine"]


def _scenario(tmp_path: Path, runtimes: list[str], user: str) -> Path:
    path = rel.scenario_file(tmp_path, runtimes, [("id", ID_ARGV)])
    path.write_text(
        path.read_text().replace('name = "bench-rel"\n', f'name = "bench-rel"\nuser = {user}\n')
    )
    return path


def test_workloads_run_as_the_scenario_user(tmp_path: Path) -> None:
    require_root()
    nobody = pwd.getpwnam("nobody")
    runtimes = [name for name, why_not in rel.answering().items() if not why_not]
    scenario = _scenario(tmp_path, runtimes, '"nobody"')
    done = bench("run", str(scenario), "--results-dir", str(tmp_path / "r"), "--json")
    assert done.returncode == 0, done.stderr
    run_dir = Path(json.loads(done.stdout)["run_dir"])
    trials = load_run(run_dir).trials
    assert sorted(trials["runtime"]) == sorted(runtimes)
    assert set(trials["status"]) == {"ok"}, trials[["runtime", "error", "output_tail"]]
    for trial_id in trials["trial_id"]:
        io_dir = run_dir / "trials" / trial_id
        ids = (io_dir / "stdout.txt").read_text().split()
        assert ids == [str(nobody.pw_uid), str(nobody.pw_gid), str(nobody.pw_gid)], trial_id
        assert (io_dir / "mine").stat().st_uid == nobody.pw_uid


@pytest.mark.parametrize(
    ("user", "message"),
    [('"Not A Name"', "is not a user name"), ('"bench-no-such-user"', "does not exist")],
)
def test_bad_user_exits_2(tmp_path: Path, user: str, message: str) -> None:
    require_root()
    scenario = _scenario(tmp_path, ["bare"], user)
    done = bench("run", str(scenario), "--results-dir", str(tmp_path / "r"))
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r").exists()
