"""The containerd daemon bench talks to: the host's own, or a private one per bench process.

A host that runs containerd as a service has it at /run/containerd. Without one, bench
starts its own (own config, root, state and socket; the CRI plugin disabled: nothing here
is Kubernetes), as it does for podman's service, and stops it when the run ends. It never
uses the containerd that dockerd starts for itself (/var/run/docker/containerd): that one
belongs to docker, dies and restarts with dockerd, and its memory is docker's footprint
(docs/runtimes.md, "containerd").
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bench.errors import BenchError, RuntimeUnavailable
from bench.runtimes._network import owner_alive
from bench.runtimes._podman_service import stop_pids as stop_pids
from bench.runtimes._process import log_tail, spawn

SYSTEM_SOCKET = Path("/run/containerd/containerd.sock")
# /run/bench-containerd/<owner pid>-<token>/ holds the socket and state, and
# /var/lib/bench-containerd/<owner pid>-<token>/ the root (images, snapshots): the owner
# pid tells gc whether the daemon is stale.
STATE_PARENT = Path("/run/bench-containerd")
# BENCH_CONTAINERD_ROOT moves the root where /var/lib is read-only (the v2 test VM, whose
# guest-services.sh sets it as it sets podman's storage.conf).
ROOT_PARENT = Path(os.environ.get("BENCH_CONTAINERD_ROOT", "/var/lib/bench-containerd"))
_PRIVATE_RE = re.compile(r"^(\d+)-([0-9a-f]+)$")
INSTALL_FIX = "apt-get install containerd"
START_TIMEOUT_S = 30.0
CTR_TIMEOUT_S = 60.0


def ctr(address: Path, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    """One `ctr` call against `address` in `namespace`; never raises on its exit status."""
    argv = ["ctr", "--address", str(address), "--namespace", namespace, *args]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=CTR_TIMEOUT_S)


def ctr_checked(address: Path, namespace: str, *args: str) -> str:
    """`ctr` output; BenchError with its message when it fails."""
    proc = ctr(address, namespace, *args)
    if proc.returncode != 0:
        raise BenchError(f"`ctr {' '.join(args[:2])}` failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def answers(address: Path) -> bool:
    """Whether a containerd serves `address`."""
    if not address.is_socket():
        return False
    return ctr(address, "default", "version").returncode == 0


def private_config(root: Path, state: Path, address: Path) -> str:
    """containerd's config: own root, state and socket; no CRI, no metrics, no debug socket."""
    return (
        "version = 2\n"
        f'root = "{root}"\n'
        f'state = "{state}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        "[grpc]\n"
        f'  address = "{address}"\n'
        '[plugins."io.containerd.internal.v1.opt"]\n'
        f'  path = "{root / "opt"}"\n'
    )


@dataclass
class Daemon:
    """The containerd bench uses; `process` is set when bench started it."""

    address: Path
    process: subprocess.Popen[bytes] | None = None
    state_dir: Path | None = None
    root_dir: Path | None = None
    log: IO[bytes] | None = None

    def pids(self) -> list[int]:
        """The daemon and its shims (a shim's command line names the daemon's socket)."""
        import psutil

        found = []
        for process in psutil.process_iter(["name", "cmdline"]):
            cmdline = process.info["cmdline"] or []
            ours = process.pid == self.process.pid if self.process else not cmdline[1:]
            if str(self.address) in cmdline or (process.info["name"] == "containerd" and ours):
                found.append(process.pid)
        return sorted(found)

    def stop(self) -> None:
        """Stop a daemon bench started and remove its directories; nothing for the host's."""
        if self.process is not None and self.process.poll() is None:
            stop_pids([self.process.pid])
            self.process.poll()
        if self.log is not None:
            self.log.close()
        for directory in (self.state_dir, self.root_dir):
            if directory is not None:
                remove_tree(directory)


def start_private() -> Daemon:
    """Start a containerd of bench's own; RuntimeUnavailable with its log when it fails."""
    if shutil.which("containerd") is None:
        raise RuntimeUnavailable(f"containerd is not installed; fix: {INSTALL_FIX}")
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    state, root = STATE_PARENT / tag, ROOT_PARENT / tag
    address = state / "containerd.sock"
    try:
        state.mkdir(parents=True, mode=0o700)
        root.mkdir(parents=True, mode=0o700)
    except OSError as error:
        raise RuntimeUnavailable(
            f"cannot make containerd's directories ({error}); fix: make {ROOT_PARENT.parent}"
            " writable, or set BENCH_CONTAINERD_ROOT to a writable directory"
        ) from error
    config = state / "config.toml"
    config.write_text(private_config(root, state / "state", address))
    log = tempfile.TemporaryFile(prefix="bench-containerd-")  # noqa: SIM115 (closed in stop)
    process = spawn(["containerd", "--config", str(config)], log)
    daemon = Daemon(address, process, state, root, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_tail(log)
            daemon.stop()
            raise RuntimeUnavailable(f"containerd exited with status {process.returncode}: {tail}")
        if answers(address):
            return daemon
        time.sleep(0.05)
    daemon.stop()
    raise RuntimeUnavailable(
        f"containerd did not answer on {address} within {START_TIMEOUT_S:.0f} s"
    )


def connect() -> Daemon:
    """The host's containerd when it runs, else a private one."""
    if answers(SYSTEM_SOCKET):
        return Daemon(SYSTEM_SOCKET)
    return start_private()


def remove_tree(directory: Path) -> None:
    """Unmount what is still mounted below `directory` (a dead daemon's rootfs), remove it."""
    mounts = [
        Path(line.split(" ")[4])
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if Path(line.split(" ")[4]).is_relative_to(directory)
    ]
    for mount in sorted(mounts, key=lambda p: -len(p.parts)):
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
    shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class StalePrivate:
    """A private daemon's directories whose owning bench process is gone."""

    state_dir: Path
    root_dir: Path

    @property
    def address(self) -> Path:
        return self.state_dir / "containerd.sock"


def stale_private() -> list[StalePrivate]:
    tags = set()
    for parent in (STATE_PARENT, ROOT_PARENT):
        if parent.is_dir():
            tags |= {p.name for p in parent.iterdir()}
    stale = []
    for tag in sorted(tags):
        match = _PRIVATE_RE.match(tag)
        if match and not owner_alive(int(match.group(1))):
            stale.append(StalePrivate(STATE_PARENT / tag, ROOT_PARENT / tag))
    return stale


def daemon_pids_of(address: Path) -> list[int]:
    """containerd processes (daemon and shims) whose command line names `address`' dir."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(address.parent) in arg for arg in process.info["cmdline"] or []):
            found.append(process.pid)
    return sorted(found)


def remove_empty_parents() -> None:
    for parent in (STATE_PARENT, ROOT_PARENT):
        with contextlib.suppress(OSError):
            parent.rmdir()
