"""Rootless podman's cgroups: the one bench creates for each container, and what runs in it.

On v2 bench delegates it to the user and podman creates the container's own cgroup below it
with the limits, as a systemd user session would let it.
"""

from __future__ import annotations

import contextlib
import os

from bench.cgroups.manage import ManagedCgroup, create_cgroup, delegate
from bench.errors import BenchError
from bench.runtimes._rootless_user import Account
from bench.spec import NAME_PREFIX, Limits

# The child of the delegated cgroup that `podman run` starts in (its conmon, slirp4netns
# and rootlessport stay there); the container's cgroup, libpod-<id>, is its sibling.
LAUNCH_LEAF = "launch"
# The v2 controller each limit needs delegated.
LIMIT_CONTROLLERS = {"cpus": "cpu", "cpuset": "cpuset", "memory_bytes": "memory", "pids": "pids"}


def delegate_for(managed: ManagedCgroup, user: Account, limits: Limits) -> list[str]:
    """Delegate the trial's cgroup to the user; refuse limits whose controller it lacks.

    Podman drops such a limit with a warning ("Quota discarded") and runs unlimited.
    """
    controllers = delegate(managed, user.uid, user.gid, LAUNCH_LEAF)
    for key, controller in LIMIT_CONTROLLERS.items():
        if getattr(limits, key) is not None and controller not in controllers:
            raise BenchError(
                f"{managed.name}: podman-rootless needs the {controller} controller "
                f"delegated for limits.{key}, and {managed.dirs[0].parent} does not give it "
                f"(delegated: {' '.join(controllers) or 'none'}); enable it in the parent "
                "cgroups' cgroup.subtree_control, or remove the limit"
            )
    return controllers


def delegable_controllers(user: Account) -> list[str]:
    """The controllers a trial's cgroup delegated to the user would have, from a probe
    cgroup delegated and removed again; BenchError when bench cannot delegate one."""
    managed = create_cgroup(f"{NAME_PREFIX}probe-rootless-{os.getpid()}", Limits())
    try:
        return delegate(managed, user.uid, user.gid, LAUNCH_LEAF)
    finally:
        managed.remove()


def helpers_in(managed: ManagedCgroup, init: int) -> list[int]:
    """conmon, slirp4netns, rootlessport: the processes of the container's cgroup outside
    the container's own tree."""
    import psutil

    inside: set[int] = {init}
    with contextlib.suppress(psutil.NoSuchProcess):
        inside |= {p.pid for p in psutil.Process(init).children(recursive=True)}
    return sorted(set(managed.pids()) - inside)
