"""Per-sample cost of bench's v2 reader on a real cgroup v2 kernel: inside the test VM.

Boots tests/v2vm/run-in-v2-vm.sh and runs test_sample_cost.py's real-cgroup rows there
(bench's reader and the naive read, on a v2 cgroup with a busy process). The VM runs
under TCG emulation, so microseconds there are many times this host's: the figure that
counts is bench's reader against the naive read of the same files in the same VM.
Takes about three minutes (mostly the boot).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks.cgroup_fixtures import require_cgroups

pytestmark = pytest.mark.benchmark(group="cgroup v2 VM")

REPO = Path(__file__).resolve().parents[1]
RUN_IN_VM = REPO / "tests" / "v2vm" / "run-in-v2-vm.sh"
ROWS = "test_bench_reader_real_cgroup or test_naive_read_real_cgroup"


def test_v2_reader_in_the_vm(benchmark: BenchmarkFixture) -> None:
    require_cgroups()
    if os.environ.get("BENCH_V2VM"):
        pytest.skip("already inside the cgroup v2 VM")
    result_json = REPO / ".v2vm" / f"sample-cost-{os.getpid()}.json"
    result_json.parent.mkdir(exist_ok=True)
    guest_cmd = shlex.join([
        ".venv/bin/python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", ROWS,
        "benchmarks/test_sample_cost.py", "--benchmark-enable", f"--benchmark-json={result_json}",
    ])  # fmt: skip

    def boot() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(RUN_IN_VM), guest_cmd], capture_output=True, text=True, timeout=900, check=False
        )

    proc = benchmark.pedantic(boot, rounds=1, iterations=1)  # type: ignore[no-untyped-call]
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0 and result_json.exists(), f"VM run failed:\n{tail}"
    rows = json.loads(result_json.read_text())["benchmarks"]
    result_json.unlink()
    medians_us = {row["name"]: row["stats"]["median"] * 1e6 for row in rows}
    versions = {row["extra_info"].get("version") for row in rows}
    bench_us = medians_us["test_bench_reader_real_cgroup"]
    naive_us = medians_us["test_naive_read_real_cgroup"]
    info = {
        "cgroup_versions": sorted(v for v in versions if v),
        "bench_reader_us_tcg": round(bench_us, 1),
        "naive_read_us_tcg": round(naive_us, 1),
        "naive_over_bench": round(naive_us / bench_us, 1),
    }
    benchmark.extra_info.update(info)
    print(f"\nv2 reader in the VM (TCG): {info}")
    assert info["cgroup_versions"] == ["v2"], info
    assert bench_us < naive_us, info
