"""The low-level OCI runtimes docker and podman run containers with (a scenario's `oci_runtimes`).

What each needs from the engine above it, whether it can run on this host and how it is
described in the manifest. gVisor's runsc is a sandbox, not a thin runc: docs/runtimes.md,
"OCI runtimes", says what its flags are for and what it costs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from bench.runtimes.base import Availability

INSTALL_FIX = "apt-get install {package}"
DOCKER_CONFIG = Path("/etc/docker/daemon.json")
DOCKER_FIX = (
    "bash scripts/start-services.sh (adds it to the runtimes of {config} and sends dockerd "
    "SIGHUP to reload them)"
)


@dataclass(frozen=True)
class OciRuntime:
    """One OCI runtime: its command and the global flags bench always gives it."""

    name: str
    package: str
    # Global flags as `name=value`: podman takes each as `--runtime-flag name=value`,
    # dockerd as `--name=value` in the runtimeArgs of its daemon.json entry.
    flags: tuple[str, ...] = ()
    # The only network mode it runs with here; None: any the engine offers.
    network_only: str | None = None
    # Whether it refuses a hybrid cgroup host (v1 controllers plus a cgroup2 mount).
    needs_pure_hierarchy: bool = False
    # Whether a memory overrun kills the whole container (a sandbox's kernel is one host
    # process) and the engine removes its cgroup at once: bench then reads the cgroup as
    # soon as the kernel reports an OOM, to keep the totals (bench.cgroups.oomwatch).
    dies_whole_on_oom: bool = False

    @property
    def docker_runtime_args(self) -> list[str]:
        return [f"--{flag}" for flag in self.flags]


# runsc: network=none because its own network stack refuses the host's root network
# namespace ("cannot run with network enabled in root network namespace"); host-fifo=open
# because bench's start/exit handshake is a FIFO in the bind-mounted io dir, which gVisor's
# file proxy refuses by default; platform=ptrace because KVM hangs on this kind of VM host
# (docs/host-notes.md), and so the manifest says which platform was measured.
RUNSC_PLATFORM = "ptrace"
KNOWN: dict[str, OciRuntime] = {
    oci.name: oci
    for oci in (
        OciRuntime("runc", "runc"),
        # crun 1.8 reads /sys/fs/cgroup/unified/cgroup.controllers first and stops there.
        OciRuntime("crun", "crun", needs_pure_hierarchy=True),
        OciRuntime(
            "runsc",
            "runsc",
            flags=("network=none", "host-fifo=open", f"platform={RUNSC_PLATFORM}"),
            network_only="none",
            dies_whole_on_oom=True,
        ),
    )
}


def known(name: str) -> OciRuntime:
    """The OCI runtime `name`; one bench knows nothing about runs without extra flags."""
    return KNOWN.get(name) or OciRuntime(name, name)


def dies_whole_on_oom(name: str | None) -> bool:
    """Whether an OOM kill ends the whole container and its cgroup with it."""
    return name is not None and known(name).dies_whole_on_oom


def available(name: str) -> Availability:
    """Whether `name` is installed and can run on this host (whatever engine is above it)."""
    from bench.cgroups.locate import host_cgroup_version

    oci = known(name)
    if shutil.which(oci.name) is None:
        return Availability(
            False, f"{oci.name} is not installed", INSTALL_FIX.format(package=oci.package)
        )
    if oci.needs_pure_hierarchy and host_cgroup_version() == "hybrid":
        return Availability(
            False,
            f"{oci.name} refuses hybrid cgroup hosts (v1 controllers plus a cgroup2 mount: "
            "'cgroups in hybrid mode not supported'), which this host is",
            f"run {oci.name} trials on a pure cgroup v1 or v2 host",
        )
    return Availability(True)


@cache
def version(name: str) -> str:
    """`<name> <version>` and, for runsc, the platform it runs on (for the manifest)."""
    oci = known(name)
    try:
        proc = subprocess.run(
            [oci.name, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        first = proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        first = "unknown"
    platform = dict(flag.split("=", 1) for flag in oci.flags).get("platform")
    return first + (f", platform {platform}" if platform else "")


def podman_global_args(name: str) -> list[str]:
    """podman's global options that select `name` with bench's flags for it."""
    args = ["--runtime", name]
    for flag in known(name).flags:
        args += ["--runtime-flag", flag]
    return args


def check_network(name: str | None, network: str, container: str) -> str | None:
    """Why `name` cannot run `container` in network mode `network`; None when it can."""
    if name is None:
        return None
    only = known(name).network_only
    if only is not None and network != only:
        return (
            f"{container}: OCI runtime {name} runs with network mode {only!r} only here, "
            f"not {network!r}"
        )
    return None


# Where each engine keeps runsc's state: podman's runtime root, and the one dockerd's
# runc shim gives every OCI runtime (containerd namespace "moby"; runsc lists only its own).
RUNSC_STATE_ROOTS = {
    "podman": Path("/run/runsc"),
    "docker": Path("/run/docker/runtime-runc/moby"),
}


@dataclass(frozen=True)
class Sandbox:
    """A gVisor sandbox in a runsc state root."""

    root: Path
    container_id: str

    def __str__(self) -> str:
        return f"runsc sandbox {self.container_id[:12]} (root {self.root})"


def orphan_sandboxes(engine: str, known_ids: set[str]) -> list[Sandbox]:
    """Sandboxes of bench's wrapper that `engine` no longer knows (a start that failed
    half-way, or an engine restarted under a run): nothing else would ever remove them."""
    from bench.runtimes._container import WRAPPER_ARGV0

    root = RUNSC_STATE_ROOTS.get(engine)
    if root is None or not root.is_dir() or shutil.which("runsc") is None:
        return []
    argv = ["runsc", "--root", str(root), "list", "--format", "json"]
    try:
        listed = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        entries = json.loads(listed.stdout or "[]") or []
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return []
    found = []
    for entry in entries:
        container_id = str(entry.get("id", ""))
        if not container_id or container_id in known_ids:
            continue
        try:
            spec = json.loads((Path(entry.get("bundle", "")) / "config.json").read_text())
        except (OSError, ValueError):
            continue  # no bundle: nothing says it is bench's
        if WRAPPER_ARGV0 in (spec.get("process") or {}).get("args", []):
            found.append(Sandbox(root, container_id))
    return found


def remove_sandbox(sandbox: Sandbox) -> bool:
    """`runsc delete --force`: kills the Sentry and gofer, removes the state."""
    argv = ["runsc", "--root", str(sandbox.root), "delete", "--force", sandbox.container_id]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def docker_entry(name: str) -> dict[str, Any]:
    """What dockerd's daemon.json "runtimes" should hold for `name` (bench's flags)."""
    oci = known(name)
    return {
        "path": shutil.which(oci.name) or f"/usr/bin/{oci.name}",
        "runtimeArgs": oci.docker_runtime_args,
    }


def docker_registration(name: str, registered: dict[str, Any]) -> Availability:
    """Whether dockerd's runtimes (`docker info`'s "Runtimes") run `name` with bench's flags."""
    found = registered.get(name)
    if name == "runc" and found is not None:
        return Availability(True)
    fix = DOCKER_FIX.format(config=DOCKER_CONFIG)
    if found is None:
        return Availability(False, f"dockerd has no runtime named {name}", fix)
    missing = [
        arg
        for arg in known(name).docker_runtime_args
        if arg not in (found.get("runtimeArgs") or [])
    ]
    if missing:
        return Availability(
            False, f"dockerd runs {name} without {' '.join(missing)}, which bench needs", fix
        )
    return Availability(True)


def merge_docker_config(config: dict[str, Any]) -> bool:
    """Add every installed OCI runtime but runc (dockerd's own) to a daemon.json's
    "runtimes" with bench's flags, keeping every other key; whether anything changed."""
    runtimes = config.setdefault("runtimes", {})
    changed = False
    for oci in KNOWN.values():
        if (
            oci.name != "runc"
            and shutil.which(oci.name)
            and runtimes.get(oci.name) != docker_entry(oci.name)
        ):
            runtimes[oci.name] = docker_entry(oci.name)
            changed = True
    return changed


def main(argv: list[str]) -> int:
    """`python -m bench.runtimes._oci [daemon.json]`: register bench's OCI runtimes with
    dockerd (scripts/start-services.sh); prints "changed" when dockerd must reload."""
    path = Path(argv[0]) if argv else DOCKER_CONFIG
    text = path.read_text() if path.exists() else ""
    config = json.loads(text) if text.strip() else {}
    if merge_docker_config(config):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2) + "\n")
        print("changed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
