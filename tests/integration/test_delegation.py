"""Bare runs by an unprivileged user in a systemd-style delegated cgroup (cgroup v2 only).

Root plays systemd's `Delegate=yes`: it makes a cgroup, offers it cpu, memory and pids
from the root's cgroup.subtree_control, and chowns the directory and its cgroup.procs,
cgroup.subtree_control and cgroup.threads to uid 65534 (cgroup-v2.rst "Model of
Delegation"). A process of that user inside it must get bench's fallback: move itself
into a leaf, create trial cgroups beside it, undo all of it at exit. The same user in a
root-owned cgroup must be told what to fix, by can_create_cgroups and `bench doctor`.

This host is v1 hybrid: the test runs in the cgroup v2 VM (tests/v2vm), where the
interpreter under /root (0700, read-only there) is made reachable for uid 65534 in a
private mount namespace of the child only.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.cgroups.locate import cgroup_mounts, host_cgroup_version
from tests.helpers import require, require_root

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534
CONTROLLERS = ("cpu", "memory", "pids")
# What systemd hands to the delegatee (systemd's CGROUP_DELEGATION.md, cgroup-v2.rst).
DELEGATED_FILES = ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads")
CHILD_TIMEOUT_S = 180  # TCG emulation: an interpreter start alone takes seconds
MIB = 1 << 20

# Runs as root inside `unshare --mount`: make the interpreter and the repo reachable for
# the user (tmpfs over a 0700 ancestor such as /root, the needed entry bound back in),
# join the cgroup, drop to the user, exec the user's command. Argv lists only.
ENTER_AND_DROP = r"""
import json, os, subprocess, sys, tempfile
plan = json.loads(sys.argv[1])
for blocked, keeps in plan["unhide"]:
    held = []
    for keep in keeps:
        spot = tempfile.mkdtemp(prefix="bench-keep-")
        subprocess.run(["mount", "--rbind", keep, spot], check=True)
        held.append((keep, spot))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "bench-unhide", blocked], check=True)
    for keep, spot in held:
        os.mkdir(keep)
        subprocess.run(["mount", "--move", spot, keep], check=True)
        os.rmdir(spot)
with open(plan["cgroup_procs"], "w") as procs:
    procs.write("0")
os.setgroups([])
os.setgid(plan["gid"])
os.setuid(plan["uid"])
os.execve(plan["argv"][0], plan["argv"], {**os.environ, "PATH": plan["path"]})
"""

# As the user, in the delegated cgroup: probe, run one workload under limits, report.
RUN_DELEGATED = r"""
import json, pathlib, sys
from bench.cgroups import can_create_cgroups, list_bench_cgroups, open_reader
from bench.runtimes.bare import BareRuntime
from bench.spec import Limits, StartSpec
io_dir, argv = pathlib.Path(sys.argv[1]), json.loads(sys.argv[2])
probe_ok, probe_detail = can_create_cgroups()
spec = StartSpec(name="bench-deleg-run", argv=tuple(argv), io_dir=io_dir,
                 limits=Limits(cpus=1.0, memory_bytes=256 << 20, pids=64))
handle = BareRuntime().start(spec)
try:
    trial = handle.cgroup.dirs["unified"]
    controllers = (trial / "cgroup.controllers").read_text().split()
    own_during = pathlib.Path("/proc/self/cgroup").read_text().strip()
    reader = open_reader(handle.cgroup)
    exit_info = handle.wait(120)
    final = reader.read()
    reader.close()
finally:
    handle.stop()
print(json.dumps({
    "probe_ok": probe_ok, "probe_detail": probe_detail, "trial": str(trial),
    "controllers": controllers, "own_cgroup_during": own_during,
    "exit_code": None if exit_info is None else exit_info.exit_code,
    "cpu_usage_ns": final.cpu_usage_ns, "mem_peak_bytes": final.mem_peak_bytes,
    "left_after_stop": [str(p) for p in list_bench_cgroups()],
}))
"""

# As the user, in a root-owned cgroup: the probe's answer on the first line, then exactly
# `python -m bench doctor --json` in the same interpreter (one start less under the VM's
# emulation); the exit status is the CLI's.
PROBE_THEN_DOCTOR = r"""
import json, runpy, sys
from bench.cgroups import can_create_cgroups
print(json.dumps(can_create_cgroups()), flush=True)
sys.argv = ["bench", "doctor", "--json"]
runpy.run_module("bench", run_name="__main__")
"""


def _fail_or_skip(reason: str) -> None:
    """Skip outside the v2 VM; inside it (BENCH_V2VM=1) this test must run, so fail."""
    if os.environ.get("BENCH_V2VM"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cgroup_root() -> Path:
    require_root()
    version = host_cgroup_version()
    if version != "v2":
        _fail_or_skip(
            f"delegation needs a pure cgroup v2 host; this one is {version} "
            "(run it in the v2 VM: tests/v2vm/test_in_v2_vm.py)"
        )
    require(shutil.which("unshare") is not None, "unshare (util-linux) is not installed")
    root = cgroup_mounts()["unified"]
    available = (root / "cgroup.controllers").read_text().split()
    missing = [c for c in CONTROLLERS if c not in available]
    require(not missing, f"the v2 root lacks the {missing} controllers")
    # Offer them to the root's children, as systemd does for a delegated unit's parents.
    (root / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in CONTROLLERS))
    return root


def _remove_tree(top: Path) -> None:
    """Kill what runs in `top` and below, then remove those cgroups, deepest first."""
    found = sorted((Path(d) for d, _s, _f in os.walk(top)), key=lambda p: -len(p.parts))
    for directory in found:
        deadline = time.monotonic() + 10.0
        while True:
            with contextlib.suppress(FileNotFoundError):
                for pid in (directory / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:  # EBUSY until the killed tasks are released
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture
def delegated(cgroup_root: Path) -> Iterator[Path]:
    """A cgroup delegated to uid 65534 the way systemd's Delegate=yes does it."""
    cgroup = cgroup_root / "bench-deleg-test"
    _remove_tree(cgroup)  # an interrupted earlier run
    cgroup.mkdir()
    try:
        os.chown(cgroup, NOBODY, NOBODY)
        for name in DELEGATED_FILES:
            os.chown(cgroup / name, NOBODY, NOBODY)
        yield cgroup
    finally:
        _remove_tree(cgroup)


@pytest.fixture
def undelegated(cgroup_root: Path) -> Iterator[Path]:
    """A root-owned cgroup: what an unprivileged user's session has without Delegate=yes."""
    cgroup = cgroup_root / "bench-deleg-none"
    _remove_tree(cgroup)
    cgroup.mkdir()
    try:
        yield cgroup
    finally:
        _remove_tree(cgroup)


@pytest.fixture
def user_dir() -> Iterator[Path]:
    """HOME and workload directory of uid 65534 (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="bench-deleg-"))
    os.chown(path, NOBODY, NOBODY)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _unhide_plan(paths: list[Path]) -> list[tuple[str, list[str]]]:
    """Per first ancestor that others cannot search (e.g. /root): its entries to keep."""
    plan: dict[str, list[str]] = {}
    for path in paths:
        for ancestor in reversed(path.parents[:-1]):  # from /x downwards
            if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                keep = str(ancestor / path.relative_to(ancestor).parts[0])
                keeps = plan.setdefault(str(ancestor), [])
                if keep not in keeps:
                    keeps.append(keep)
                break
    return list(plan.items())


def run_as_user(
    cgroup: Path, home: Path, *argv: str, path_env: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run argv as uid 65534 in `cgroup` (joined by root before dropping privileges)."""
    python = Path(sys.executable)
    needed = [python.resolve(), REPO]
    for path in needed:
        mode = os.stat(path).st_mode
        if not mode & stat.S_IROTH or (path.is_dir() and not mode & stat.S_IXOTH):
            _fail_or_skip(f"{path} is not readable by others: uid {NOBODY} cannot use it")
    plan = {
        "unhide": _unhide_plan(needed),
        "cgroup_procs": str(cgroup / "cgroup.procs"),
        "uid": NOBODY,
        "gid": NOBODY,
        "argv": [str(python), *argv],
        "path": os.environ.get("PATH", "/usr/bin:/bin") if path_env is None else path_env,
    }
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),  # the user's: plan["path"]
        "HOME": str(home),
        "PYTHONPATH": str(REPO),
        "PYTHONDONTWRITEBYTECODE": "1",  # the repo is shared with the host
        "LANG": "C.UTF-8",
    }
    unshare = ["unshare", "--mount", "--propagation", "private", "--"]
    return subprocess.run(
        [*unshare, str(python), "-c", ENTER_AND_DROP, json.dumps(plan)],
        cwd=home,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )


def last_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _children(cgroup: Path) -> list[str]:
    return sorted(entry.name for entry in cgroup.iterdir() if entry.is_dir())


def test_delegated_user_runs_trials_in_its_own_cgroup(delegated: Path, user_dir: Path) -> None:
    stress = shutil.which("stress-ng")
    require(stress is not None, "stress-ng is not installed (apt-get install stress-ng)")
    workload = [str(stress), "--cpu", "1", "--vm", "1", "--vm-bytes", "32M", "--timeout", "2s",
                "--quiet"]  # fmt: skip
    io_dir = user_dir / "io"
    io_dir.mkdir()
    os.chown(io_dir, NOBODY, NOBODY)

    result = last_json(
        run_as_user(delegated, user_dir, "-c", RUN_DELEGATED, str(io_dir), json.dumps(workload))
    )
    assert isinstance(result, dict)
    print(f"\ndelegated run as uid {NOBODY}: {json.dumps(result)}")

    assert result["probe_ok"], result["probe_detail"]
    assert str(delegated / "bench") in result["probe_detail"]
    # BenchExec's layout: the user's process in a leaf, trials beside it.
    assert result["own_cgroup_during"].endswith(f"/{delegated.name}/harness")
    assert result["trial"] == str(delegated / "bench" / "bench-deleg-run")
    assert set(CONTROLLERS) <= set(result["controllers"])
    assert result["exit_code"] == 0
    assert result["cpu_usage_ns"] > 0
    assert result["mem_peak_bytes"] is not None and result["mem_peak_bytes"] > 16 * MIB
    assert result["left_after_stop"] == []
    # At exit bench undid the move: no leaf, no bench dir, no controllers turned on.
    assert _children(delegated) == []
    assert (delegated / "cgroup.subtree_control").read_text().split() == []
    assert (delegated / "cgroup.procs").read_text().split() == []


def test_undelegated_user_is_told_what_to_fix(undelegated: Path, user_dir: Path) -> None:
    # An empty PATH: the podman and lxc checks answer "not installed" at once instead of
    # starting a rootless podman service as uid 65534 (58 s under the VM's emulation, and
    # it leaves podman's pause process behind). Only the cgroup part is checked here.
    proc = run_as_user(undelegated, user_dir, "-c", PROBE_THEN_DOCTOR, path_env="")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    probe_line, doctor_json = proc.stdout.split("\n", 1)
    ok, detail = json.loads(probe_line)
    print(f"\nundelegated uid {NOBODY}: {detail}")
    assert ok is False
    for fix in ("Run bench as root", "systemd-run", "Delegate=yes", str(undelegated)):
        assert fix in detail, f"{fix!r} missing from: {detail}"

    report = json.loads(doctor_json)
    assert report["can_create_cgroups"] is False
    assert report["cgroup_detail"] == detail
    bare = next(check for check in report["runtimes"] if check["name"] == "bare")
    assert bare["available"] is False and "Delegate=yes" in bare["fix"]
    assert _children(undelegated) == []  # the failed attempt left nothing behind
