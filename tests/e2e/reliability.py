"""Helpers of the reliability e2e tests: start a real `bench run`, find what one run left.

Everything is scoped to one run through its object-name prefix (bench.naming.object_prefix:
`bench-<sha256(run_id)[:8]>-`), so tests running beside other bench runs on a shared
host never count, or remove, someone else's containers and cgroups.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.naming import object_prefix
from tests.helpers import REPO, require, require_root

LXCPATH = Path("/var/lib/bench-lxc")
# lxc-system's containers (bench/runtimes/lxc_system.py) live in a lxcpath of their own.
LXCPATHS = (LXCPATH, Path("/var/lib/bench-lxc-system"))
PRIVATE_PODMAN_SOCKETS = Path("/run")


def scenario_file(
    directory: Path,
    runtimes: list[str],
    workloads: list[tuple[str, list[str]]],
    *,
    repetitions: int = 1,
    timeout_s: float = 30,
    memory: str = "128m",
    oci_runtimes: tuple[str, ...] = (),
    limits: bool = True,
) -> Path:
    """A small scenario of command workloads (argv lists), no warm-ups."""
    text = (
        f'name = "bench-rel"\nruntimes = {json.dumps(runtimes)}\nrepetitions = {repetitions}\n'
        f"warmups = 0\nsample_interval_ms = 100\ntimeout_s = {timeout_s}\n"
        f"oci_runtimes = {json.dumps(list(oci_runtimes))}\n"
    )
    if limits:
        text += f'[limits]\nmemory = "{memory}"\npids = 128\n'
    for name, argv in workloads:
        text += f'[[workloads]]\nname = "{name}"\ncommand = {json.dumps(argv)}\n'
    path = directory / "scenario.toml"
    path.write_text(text)
    return path


def answering(names: tuple[str, ...] = ("bare", "docker", "podman", "lxc")) -> dict[str, str]:
    """Runtime name -> "" when it can run here, else the reason it cannot."""
    from bench.runtimes import get_runtime

    found = {}
    for name in names:
        runtime = get_runtime(name)
        try:
            found[name] = "" if runtime.available().ok else runtime.available().reason
        finally:
            runtime.close()
    return found


def available_runtimes() -> list[str]:
    """All four runtimes; the test skips (fails in CI) when one cannot run here."""
    require_root()
    for name, why_not in answering().items():
        require(not why_not, f"{name} is not available: {why_not}")
    return ["bare", "docker", "podman", "lxc"]


@dataclass
class Started:
    """A `bench run` started in the background."""

    process: subprocess.Popen[str]
    run_id: str
    run_dir: Path
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def start_run(scenario: Path, results_dir: Path, run_id: str, *extra: str) -> Started:
    err = results_dir.parent / f"{run_id}.stderr"
    with err.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench", "run", str(scenario), "--results-dir",
             str(results_dir), "--run-id", run_id, "--json", *extra],
            cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True,
        )  # fmt: skip
    return Started(process, run_id, results_dir / run_id, err)


def wait_for_trials(run_dir: Path, count: int, timeout_s: float) -> None:
    """Until the manifest says `count` trials are done."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if json.loads((run_dir / "manifest.json").read_text())["trials_done"] >= count:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{run_dir}: fewer than {count} trials done after {timeout_s} s")


def wait_for_workload(run_id: str, timeout_s: float = 60) -> None:
    """Until one of the run's workloads is running (a trial is mid-way)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(leftovers(run_id, -1).values()):
            return
        time.sleep(0.1)
    raise AssertionError(f"no workload of {run_id} started within {timeout_s} s")


def leftovers(run_id: str, bench_pid: int) -> dict[str, list[str]]:
    """Every container, cgroup and private podman service of one run that still exists."""
    from bench.cgroups.manage import list_bench_cgroups

    prefix = object_prefix(run_id)
    found: dict[str, list[str]] = {
        "cgroups": [str(p) for p in list_bench_cgroups() if p.name.startswith(prefix)],
        "docker": _names(["docker", "ps", "-a", "--format", "{{.Names}}"], prefix),
        "podman": _names(["podman", "ps", "-a", "--format", "{{.Names}}"], prefix),
        "lxc": [],
        # LXD's client is `lxc` (LXC's own tools are lxc-*).
        "lxd": _names(["lxc", "list", "--format", "csv", "--columns", "n"], prefix),
        "podman-service": [],
    }
    for lxcpath in LXCPATHS:
        found["lxc"] += _lxc_names(lxcpath, prefix)
    if bench_pid > 0:
        marker = f"bench-podman-{bench_pid}-"
        for process in psutil.process_iter(["cmdline"]):
            if any(marker in arg for arg in process.info["cmdline"] or []):
                found["podman-service"].append(f"pid {process.pid}")
        found["podman-service"] += [str(p) for p in PRIVATE_PODMAN_SOCKETS.glob(f"{marker}*")]
    found["containerd"] = _private_containerd(bench_pid)
    found["podman-rootless"] = _rootless(prefix)
    return found


def _rootless(prefix: str) -> list[str]:
    """The run's containers in bench-rootless's storage, its io copies and their binds."""
    from bench.runtimes import podman_rootless as rootless

    if rootless.account() is None or shutil.which("podman") is None:
        return []
    names = rootless.as_user("ps", "--all", "--format", "{{.Names}}").stdout.split()
    found = [name for name in names if name.startswith(prefix)]
    found += [str(path) for path in rootless.staging_dirs() if path.name.startswith(prefix)]
    found += [str(path) for _, path in rootless.mounted_io_dirs(prefix)]
    return found


def _lxc_names(lxcpath: Path, prefix: str) -> list[str]:
    """The run's entries in one lxcpath and its running containers there."""
    if not lxcpath.is_dir():
        return []
    names = sorted(p.name for p in lxcpath.glob(f"{prefix}*"))
    if shutil.which("lxc-ls"):
        active = subprocess.run(
            ["lxc-ls", "-P", str(lxcpath), "-1", "--active"], capture_output=True, text=True
        ).stdout.split()
        names += [name for name in active if name.startswith(prefix)]
    return names


def _private_containerd(bench_pid: int) -> list[str]:
    """The private containerd of bench process `bench_pid`: its directories and processes."""
    from bench.runtimes._containerd_service import ROOT_PARENT, STATE_PARENT

    if bench_pid <= 0:
        return []
    marker = f"{bench_pid}-"
    found = [
        str(p) for d in (STATE_PARENT, ROOT_PARENT) if d.is_dir() for p in d.glob(f"{marker}*")
    ]
    for process in psutil.process_iter(["cmdline"]):
        if any(f"{STATE_PARENT}/{marker}" in arg for arg in process.info["cmdline"] or []):
            found.append(f"pid {process.pid}")
    return found


def _names(argv: list[str], prefix: str) -> list[str]:
    if shutil.which(argv[0]) is None:
        return []
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return sorted(n for n in done.stdout.split() if n.startswith(prefix))


def assert_none_left(run_id: str, bench_pid: int) -> None:
    left = {kind: names for kind, names in leftovers(run_id, bench_pid).items() if names}
    assert not left, f"left behind by {run_id}: {left}"


def remove_run_objects(run_id: str, bench_pid: int = -1) -> None:
    """Remove one run's containers, cgroups and private podman service (test clean-up)."""
    from bench.cgroups.manage import list_bench_cgroups

    prefix = object_prefix(run_id)
    left = leftovers(run_id, bench_pid)
    for entry in left["podman-service"]:
        if entry.startswith("pid "):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.split()[1]), signal.SIGKILL)
        else:
            Path(entry).unlink(missing_ok=True)
    for entry in left["containerd"]:
        if entry.startswith("pid "):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.split()[1]), signal.SIGKILL)
    for entry in left["containerd"]:
        if not entry.startswith("pid "):
            from bench.runtimes._containerd_service import remove_tree

            remove_tree(Path(entry))
    for name in left["docker"]:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    for name in left["podman"]:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, check=False)
    for name in left["lxd"]:
        subprocess.run(["lxc", "delete", "--force", name], capture_output=True, check=False)
    if left["podman-rootless"]:
        from bench.runtimes import podman_rootless as rootless

        for name in left["podman-rootless"]:
            if not name.startswith("/"):
                rootless.as_user("rm", "--force", "--time", "0", name)
        for _, target in rootless.mounted_io_dirs(prefix):
            subprocess.run(["umount", "--lazy", str(target)], capture_output=True, check=False)
        for path in rootless.staging_dirs():
            if path.name.startswith(prefix):
                shutil.rmtree(path, ignore_errors=True)
    for name in left["lxc"]:
        for lxcpath in LXCPATHS:
            if not lxcpath.is_dir():
                continue
            subprocess.run(
                ["lxc-stop", "-P", str(lxcpath), "-n", name, "-k"], capture_output=True, check=False
            )
            for path in (lxcpath / name, lxcpath / f"{name}.conf"):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                elif path.exists():
                    path.unlink()
    for path in sorted(
        (p for p in list_bench_cgroups() if p.name.startswith(prefix)),
        key=lambda p: len(p.parts),
        reverse=True,
    ):
        for pid in (path / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        for _ in range(50):
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.1)
