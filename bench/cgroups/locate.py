"""Find a process's cgroup directories from /proc/<pid>/cgroup and the mount table."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from bench.cgroups.model import CgroupLocation, HostCgroupVersion
from bench.errors import CgroupError

V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio")


@cache
def cgroup_mounts(mountinfo: Path = Path("/proc/self/mountinfo")) -> dict[str, Path]:
    """Map each v1 controller, and "unified" for cgroup2, to its mount point."""
    mounts: dict[str, Path] = {}
    for line in mountinfo.read_text().splitlines():
        # mountinfo(5): fields before " - " then fstype, source, super options.
        left, _, right = line.partition(" - ")
        fstype, _source, super_opts = [*right.split(" "), "", ""][:3]
        mount_point = Path(left.split(" ")[4].replace("\\040", " "))
        if fstype == "cgroup2":
            mounts.setdefault("unified", mount_point)
        elif fstype == "cgroup":
            for option in super_opts.split(","):
                if option in V1_CONTROLLERS:
                    mounts.setdefault(option, mount_point)
    return mounts


@cache
def hierarchy_mounts(mountinfo: Path = Path("/proc/self/mountinfo")) -> tuple[Path, ...]:
    """Mount points of every cgroup hierarchy, named ones (name=systemd) included."""
    points = []
    for line in mountinfo.read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split(" ")[0] in ("cgroup", "cgroup2"):
            points.append(Path(left.split(" ")[4].replace("\\040", " ")))
    return tuple(sorted(set(points)))


def host_cgroup_version(mounts: dict[str, Path] | None = None) -> HostCgroupVersion:
    """v2 when only cgroup2 is mounted, v1 when only v1, hybrid when both are."""
    mounts = cgroup_mounts() if mounts is None else mounts
    has_v1 = any(name in mounts for name in V1_CONTROLLERS)
    if has_v1:
        return "hybrid" if "unified" in mounts else "v1"
    if "unified" in mounts:
        return "v2"
    raise CgroupError("no cgroup filesystem is mounted; mount cgroup2 on /sys/fs/cgroup")


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Map controller name (or "unified" for the 0:: line) to the cgroup path."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        hierarchy_id, controllers, path = line.split(":", 2)
        if hierarchy_id == "0" and controllers == "":
            paths["unified"] = path
            continue
        for controller in controllers.split(","):
            paths[controller] = path
    return paths


def locate(pid: int, mounts: dict[str, Path] | None = None) -> CgroupLocation:
    """The cgroup `pid` runs in, read from /proc, never guessed from runtime naming."""
    mounts = cgroup_mounts() if mounts is None else mounts
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError as exc:
        raise CgroupError(f"cannot read the cgroup of pid {pid}: {exc.strerror}") from exc
    return location_from(parse_proc_cgroup(text), mounts)


def location_from(paths: dict[str, str], mounts: dict[str, Path]) -> CgroupLocation:
    """Join /proc/<pid>/cgroup paths with mount points; v1 controllers win on hybrid."""
    v1_dirs = {
        controller: mounts[controller] / paths[controller].lstrip("/")
        for controller in V1_CONTROLLERS
        if controller in mounts and controller in paths
    }
    if v1_dirs:
        return CgroupLocation("v1", v1_dirs)
    if "unified" in mounts and "unified" in paths:
        return CgroupLocation("v2", {"unified": mounts["unified"] / paths["unified"].lstrip("/")})
    raise CgroupError(f"no mounted cgroup hierarchy matches {paths}")
