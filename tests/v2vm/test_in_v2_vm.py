"""The cgroup v2 part of the suite: bare, docker, podman and lxc checks inside a v2 VM.

This host is cgroup v1 hybrid; most users' hosts are pure v2. One test boots a QEMU VM
with a stock Debian kernel and a pure v2 hierarchy (run-in-v2-vm.sh), starts dockerd and
configures podman there (guest-services.sh), and runs a selection of the real tests
inside: v2 readers on fixtures, the bare runtime (also run by an unprivileged user in a
delegated cgroup: test_delegation.py), and per container runtime the checks
whose result depends on the cgroup version (cpu.max throttles, OOM kills counted from
memory.events, the runtime's own cgroup found from /proc/<pid>/cgroup, memory.peak
read). Software emulation makes the VM slow, so the rest of the container tests (exit
codes, hardening, leftovers: the same code on v1 and v2) run on the host only.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import require, require_root

pytestmark = [pytest.mark.v2vm, pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RUN_IN_VM = REPO / "tests" / "v2vm" / "run-in-v2-vm.sh"
VM_MEMORY_MIB = 2048  # dockerd + podman + the workloads' 256-400 MiB (docs/host-notes.md)
VM_TIMEOUT_S = 900  # boot to power-off: 410 s with six runtimes (2026-12-03), more under load

# Per container runtime: the cpu.max limit, the OOM count plus memory.peak (both in
# test_container_contract.py, once per runtime), the cgroup identity (test_<runtime>.py).
# Bare: the whole module (it asserts behaviour, not speed, under BENCH_V2VM), and
# delegation to an unprivileged user (v2 only: skipped on this host). And tc netem's known
# delay against the load instrument: this host's kernel has no sch_netem, the VM's has.
CONTAINER_CHECKS = "cpu_quota_half_a_cpu or oom_kills_are_counted or cgroup_is_the_one"
# Not LXD: its daemon would need a state directory the read-only guest root lacks, and a
# start of its own in guest-services.sh; untried (docs/runtimes.md, "LXD"). Rootless
# podman runs: its limits through a cgroup bench delegates to its user are v2 only.
GUEST_TESTS = [
    "tests/unit/test_cgroup_readers.py",
    "tests/integration/test_bare.py",
    "tests/integration/test_sampler.py",
    "tests/integration/test_delegation.py",
    "tests/integration/test_container_contract.py",
    "tests/integration/test_docker.py",
    "tests/integration/test_podman.py",
    "tests/integration/test_podman_rootless.py",
    "tests/integration/test_lxc.py",
    "tests/integration/test_lxc_system.py",
    "tests/integration/test_containerd.py",
    "tests/integration/test_loadgen.py",
]


def guest_pytest_argv() -> list[str]:
    """The pytest command run in the VM: reader, bare, sampler modules whole, container checks."""
    selection = (
        "(test_cgroup_readers or test_bare or test_sampler or test_delegation or "
        f"{CONTAINER_CHECKS} or test_netem_delay_shows_in_p50) and not lxd"
    )
    return [
        ".venv/bin/python", "-m", "pytest", "-x", "-q", "-rfEsP", "-p", "no:cacheprovider",
        "--color=no", "--durations=8", "-k", selection, *GUEST_TESTS,
    ]  # fmt: skip


def test_suite_passes_inside_a_cgroup_v2_vm() -> None:
    if os.environ.get("BENCH_V2VM"):
        pytest.skip("already inside the cgroup v2 VM: no VM in the VM")
    require_root()
    require(
        shutil.which("qemu-system-x86_64") is not None,
        "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)",
    )
    # One shell string for the guest's /bin/sh, quoted here from a fixed argv.
    guest_cmd = shlex.join(["bash", "tests/v2vm/guest-services.sh", *guest_pytest_argv()])
    env = {**os.environ, "MEM": str(VM_MEMORY_MIB), "TIMEOUT": str(VM_TIMEOUT_S)}
    began = time.monotonic()
    proc = subprocess.run(
        [str(RUN_IN_VM), guest_cmd],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=VM_TIMEOUT_S + 120,  # + kernel download and initramfs on a fresh machine
        check=False,
    )
    wall_s = time.monotonic() - began
    output = proc.stdout + proc.stderr
    tail = "\n".join(output.splitlines()[-80:])
    # The contract checks print their measurements; show them in the host's report.
    measured = [
        line
        for line in output.splitlines()
        # "podman+crun cpus=0.5: ..." too: an engine with another OCI runtime under it.
        if re.match(
            r"(bare|docker|podman|podman-rootless|lxc|lxc-system|containerd|systemd-nspawn|netem)"
            r"(\+\w+)? ",
            line,
        )
    ]
    print(f"\ncgroup v2 VM: {wall_s:.0f} s wall, exit {proc.returncode}")
    print("\n".join(measured))
    assert proc.returncode == 0, f"the suite failed inside the cgroup v2 VM:\n{tail}"
    summary = re.search(r"^=*\s*(\d+) passed[^\n]*$", output, re.M)
    assert summary is not None, f"no pytest summary from the VM:\n{tail}"
    print(f"in the VM: {summary.group(0).strip('= ')}")
    assert not re.search(r"\d+ (failed|error)", summary.group(0)), tail
