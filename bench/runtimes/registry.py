"""The one list of runtimes: where each lives, how it is shown, what it can do.

Planning, analysis and reports read entries here instead of importing the runtime modules
(the docker and podman SDKs take about a second to import) or testing names. A new
runtime is its module plus one entry in ENTRIES.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING

from bench.errors import InputError
from bench.runtimes.base import Capabilities

if TYPE_CHECKING:
    from bench.runtimes.base import Runtime
    from bench.spec import NetworkMode

# A label names one runtime and, when the scenario had an OCI axis, the OCI runtime under
# it: "docker+crun" in analysis tables, "docker-crun" in trial and group ids; a network
# path follows a slash in tables ("docker+crun/published") and a dash in ids.
LABEL_SEPARATORS = ("+", "-", "/")
UNKNOWN_ORDER = 1_000_000


@dataclasses.dataclass(frozen=True)
class Entry:
    """One runtime: its implementation (imported on first use), display, capabilities."""

    name: str
    module: str
    class_name: str
    order: int  # position in tables and plots, smallest first
    colour: str  # of its bars and lines in the HTML report
    capabilities: Capabilities
    title: str = ""  # in headings ("Overhead vs bare metal"); the name when empty
    # The runtime every other is compared with when a comparison names no baseline.
    baseline: bool = False

    @property
    def heading(self) -> str:
        return self.title or self.name


# docker and podman: bridge and published put the container on a bridge network bench
# creates for the run (removed in close()); published adds a port on 127.0.0.1, forwarded
# by docker-proxy or by podman's iptables rules.
_CONTAINER = Capabilities(
    needs_image=True,
    oci_runtime_axis=True,
    network_modes=frozenset({"none", "host", "bridge", "published"}),
    own_processes=True,
)


def _no_oci_axis(*network_modes: NetworkMode) -> Capabilities:
    """A container runtime (an image, processes of its own) without the oci_runtimes axis."""
    return Capabilities(
        needs_image=True,
        oci_runtime_axis=False,
        network_modes=frozenset(network_modes),
        own_processes=True,
    )


_ENTRIES: dict[str, Entry] = {
    entry.name: entry
    for entry in (
        Entry(
            "bare",
            "bench.runtimes.bare",
            "BareRuntime",
            order=0,
            colour="#4c4c4c",
            capabilities=Capabilities(
                needs_image=False,
                oci_runtime_axis=False,
                network_modes=frozenset({"none", "host"}),
                own_processes=False,
            ),
            title="bare metal",
            baseline=True,
        ),
        Entry(
            "containerd",
            "bench.runtimes.containerd",
            "ContainerdRuntime",
            # Between bare metal and docker: the layer docker adds reads off one table.
            order=5,
            colour="#17becf",
            # ctr offers its own network namespace (lo only) or the host's; no bridge
            # without CNI plugins, which Debian's containerd does not ship.
            capabilities=_no_oci_axis("none", "host"),
        ),
        Entry(
            "docker",
            "bench.runtimes.docker",
            "DockerRuntime",
            order=10,
            colour="#1f77b4",
            capabilities=_CONTAINER,
        ),
        Entry(
            "podman",
            "bench.runtimes.podman",
            "PodmanRuntime",
            order=20,
            colour="#8c564b",
            capabilities=_CONTAINER,
        ),
        Entry(
            "podman-rootless",
            "bench.runtimes.podman_rootless",
            "PodmanRootlessRuntime",
            # Beside podman: what giving up root costs reads off one table.
            order=25,
            colour="#c49c94",
            # No bridge the host reaches without root: none, or slirp4netns with a port
            # published on 127.0.0.1 by rootlessport (a user-space proxy). Limits on v2
            # only: through a cgroup bench delegates to the user (docs/runtimes.md).
            capabilities=dataclasses.replace(
                _no_oci_axis("none", "published"),
                limits_on=frozenset({"v2"}),
                without_limits=(
                    "rootless podman creates no cgroup on v1; bench still measures CPU, "
                    "memory and pids of the cgroup it starts podman in, which holds the "
                    "container with conmon, slirp4netns and rootlessport. Remove [limits] to "
                    "run it (a cpuset alone is applied, as CPU affinity), or leave "
                    "podman-rootless out"
                ),
                cpuset_by_affinity=True,
            ),
        ),
        Entry(
            "lxc",
            "bench.runtimes.lxc",
            "LxcRuntime",
            order=30,
            colour="#2ca02c",
            # lxc-execute sets the container up itself: no OCI runtime to choose. Network:
            # host shares the host's stack (lxc.net.0.type = none), bridge is a veth on a
            # bridge bench creates; not published, which would need route_localnet=1 to
            # forward 127.0.0.1 (docs/architecture.md, "Network paths").
            capabilities=_no_oci_axis("none", "host", "bridge"),
        ),
        Entry(
            "lxc-system",
            "bench.runtimes.lxc_system",
            "LxcSystemRuntime",
            # Beside lxc: a system container against an application container reads off
            # one table.
            order=35,
            colour="#98df8a",
            # Booted with lxc-start (busybox init), the workload through lxc-attach; no
            # bridge mode yet (lxc's bridge code would serve, untested for it).
            capabilities=_no_oci_axis("none", "host"),
        ),
        Entry(
            "lxd",
            "bench.runtimes.lxd",
            "LxdRuntime",
            # After lxc-system: the same kind of container, driven through LXD's daemon.
            order=37,
            colour="#9467bd",
            # Booted by `lxc launch` (busybox init), the workload through `lxc exec`; LXD
            # refuses raw lxc.net lines, and bench gives its containers no nic: none only.
            capabilities=_no_oci_axis("none"),
        ),
        Entry(
            "systemd-nspawn",
            "bench.runtimes.nspawn",
            "NspawnRuntime",
            order=40,
            colour="#bcbd22",
            capabilities=_no_oci_axis("none", "host"),
        ),
    )
}


def oci_runtime_names() -> tuple[str, ...]:
    """The OCI runtimes a scenario's `oci_runtimes` may name (engines with the axis)."""
    from bench.runtimes._oci import KNOWN

    return tuple(KNOWN)


def names() -> tuple[str, ...]:
    """Every registered runtime, in display order."""
    return tuple(e.name for e in sorted(_ENTRIES.values(), key=lambda e: (e.order, e.name)))


def entry(name: str) -> Entry:
    """The entry of runtime `name`; InputError listing the known ones when there is none."""
    found = _ENTRIES.get(name)
    if found is None:
        raise InputError(unknown_message(name))
    return found


def unknown_message(name: str) -> str:
    return f"unknown runtime {name!r}; known: {', '.join(names())}"


def of_label(label: str) -> Entry | None:
    """The entry a table label or trial id prefix belongs to ("docker+crun" -> docker)."""
    if label in _ENTRIES:
        return _ENTRIES[label]
    # The longest matching name wins, so "bare-alias-runc" is bare-alias, not bare.
    for name in sorted(_ENTRIES, key=len, reverse=True):
        if any(label.startswith(name + sep) for sep in LABEL_SEPARATORS):
            return _ENTRIES[name]
    return None


def rank(label: str) -> int:
    """Display position of a label's runtime; unknown runtimes after every known one."""
    found = of_label(label)
    return UNKNOWN_ORDER if found is None else found.order


def baseline() -> str:
    """The runtime a comparison is made against when it names none."""
    for name in names():
        if _ENTRIES[name].baseline:
            return name
    return names()[0]


def get_runtime(name: str) -> Runtime:
    """A new instance of the runtime called `name`."""
    found = entry(name)
    runtime: Runtime = getattr(importlib.import_module(found.module), found.class_name)()
    # A second entry may reuse a class (another name for the same runtime): the instance
    # answers to the name it was asked by.
    runtime.name = found.name
    return runtime


def register(new: Entry) -> None:
    """Add a runtime (plugins, tests); a name already registered is refused."""
    if new.name in _ENTRIES:
        raise ValueError(f"runtime {new.name!r} is already registered")
    _ENTRIES[new.name] = new


def unregister(name: str) -> None:
    """Remove a runtime added with register()."""
    _ENTRIES.pop(name, None)
