"""Create, join, kill and remove the cgroups of bare-metal runs, on v1 (hybrid) and v2.

Layout: v1 `<controller mount>/bench/<name>` in every controller bench reads; v2
`<root>/bench/<name>`, where <root> is the hierarchy's (namespace's) root or, when that
is not writable, bench's own cgroup after moving bench's processes into a leaf, as
BenchExec does on systemd hosts with Delegate=yes (cgroup-v2.rst "Delegation" and the
no-internal-process rule). At exit bench undoes that move (restore_own_cgroup).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

from bench.cgroups import _fs
from bench.cgroups.locate import (
    V1_CONTROLLERS,
    cgroup_mounts,
    hierarchy_mounts,
    host_cgroup_version,
    parse_proc_cgroup,
)
from bench.cgroups.model import CgroupLocation
from bench.errors import BenchError, CgroupError
from bench.spec import CPU_PERIOD_US, NAME_PREFIX, Limits

BENCH_DIR = "bench"
# v2 fallback: the leaf that holds bench's own processes so its parent may delegate.
SELF_LEAF = "harness"
V2_CONTROLLERS = ("cpu", "memory", "pids", "io", "cpuset")

FIX_ROOT = (
    "Run bench as root. On cgroup v2 without root, start bench in a cgroup delegated to "
    "your user, e.g. `systemd-run --user --scope -p Delegate=yes bench ...` (cpu limits "
    "also need `Delegate=cpu cpuset io memory pids` in user@.service)."
)


@dataclass
class ManagedCgroup:
    """One bare-metal trial's cgroup: join it from a child, kill what runs in it, remove it."""

    name: str
    location: CgroupLocation
    dirs: tuple[Path, ...]
    join_fds: tuple[int, ...] = field(default=(), repr=False)
    _removed: bool = field(default=False, repr=False)

    def join_current_process(self) -> None:
        """Move the calling process in; safe in a preexec_fn (writes "0" to kept-open fds)."""
        for fd in self.join_fds:
            os.write(fd, b"0")

    def pids(self) -> list[int]:
        """Every process in the cgroup and the cgroups below it; on v1 the first
        hierarchy's, as each of bench's hierarchies holds the same processes."""
        # procs() is [] for a cgroup removed mid-walk; CgroupError is an unreadable file.
        with contextlib.suppress(CgroupError):
            return [pid for sub in _fs.subtree(self.dirs[0]) for pid in _fs.procs(sub)]
        return []

    def kill_all(self, timeout_s: float = 5.0) -> None:
        """SIGKILL every process in the cgroup and its children; wait until none is left."""
        if self._removed:
            return
        kill_file = self.dirs[0] / "cgroup.kill"  # v2, kernel 5.14+: kills the subtree
        if self.location.version == "v2" and kill_file.exists():
            with contextlib.suppress(CgroupError):  # the loop below still does the job
                _fs.write(kill_file, "1")
        for directory in self.dirs:
            for sub in _fs.subtree(directory):
                _fs.kill_until_empty(sub, timeout_s)

    def remove(self, timeout_s: float = 5.0) -> None:
        """Remove the directories, child cgroups the workload made, and the bench parents
        once empty. Idempotent."""
        if self._removed:
            return
        for directory in (*self.dirs, *_added_by_runtime(self.name, self.dirs)):
            for sub in _fs.subtree(directory):
                _fs.rmdir(sub, timeout_s)
        for parent in {d.parent for d in self.dirs} | {m / BENCH_DIR for m in hierarchy_mounts()}:
            with contextlib.suppress(OSError):  # siblings may still use the parent
                parent.rmdir()
        for fd in self.join_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._removed = True


# What a delegatee must own besides the directory (cgroup-v2.rst, "Delegation").
DELEGATED_FILES = ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control")


def delegate(managed: ManagedCgroup, uid: int, gid: int, leaf: str) -> list[str]:
    """Hand a v2 cgroup to uid:gid with its controllers on for children; those controllers.

    Its processes then start in `leaf`, a child: a cgroup that gives its children
    controllers holds no process itself (the no-internal-process rule). The delegatee may
    create cgroups below, move its processes between them and set their limits.
    """
    if managed.location.version != "v2":
        raise CgroupError(f"{managed.name}: only a cgroup v2 cgroup can be delegated")
    directory = managed.dirs[0]
    _enable_controllers(directory)
    leaf_dir = directory / leaf
    _mkdir(leaf_dir, exist_ok=False, fix="")
    owned = [directory, *(directory / name for name in DELEGATED_FILES)]
    owned += [leaf_dir, *(leaf_dir / name for name in DELEGATED_FILES)]
    try:
        for path in owned:
            os.chown(path, uid, gid)
        fd = os.open(leaf_dir / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CgroupError(f"cannot delegate {directory} to uid {uid}: {exc.strerror}") from exc
    for old in managed.join_fds:
        os.close(old)
    managed.join_fds = (fd,)
    return _fs.read(directory / "cgroup.subtree_control").split()


def _added_by_runtime(name: str, made: tuple[Path, ...]) -> list[Path]:
    """bench/<name> in hierarchies bench did not create it in.

    A runtime started inside the cgroup joins every hierarchy: runc adds devices and
    freezer, systemd-nspawn name=systemd and the unified tree. Removed with the cgroup.
    """
    found = [mount / BENCH_DIR / name for mount in hierarchy_mounts()]
    return [path for path in found if path not in made and path.is_dir()]


def cgroup_path(managed: ManagedCgroup) -> str:
    """The cgroup's path relative to its hierarchy's root, as runtimes take it (/bench/x)."""
    directory = managed.dirs[0]
    root = next(m for m in hierarchy_mounts() if directory.is_relative_to(m))
    return "/" + str(directory.relative_to(root))


def create_cgroup(name: str, limits: Limits) -> ManagedCgroup:
    """Create the cgroup `name` (must start with "bench") with `limits` applied."""
    if not name.startswith(NAME_PREFIX) or "/" in name or name in (".", ".."):
        raise CgroupError(f"cgroup name {name!r} must start with {NAME_PREFIX!r}, without '/'")
    mounts = cgroup_mounts()
    if host_cgroup_version(mounts) == "v2":
        managed = _create_v2(name, limits, mounts["unified"])
    else:
        managed = _create_v1(name, limits, mounts)
    # Opened here, in the parent, so the child only has to write(2) (see join_current_process).
    fds: list[int] = []
    try:
        for directory in managed.dirs:
            fds.append(os.open(directory / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
    except OSError as exc:
        managed.join_fds = tuple(fds)
        managed.remove()
        raise CgroupError(f"cannot open {directory}/cgroup.procs: {exc.strerror}") from exc
    managed.join_fds = tuple(fds)
    return managed


def _create_v1(name: str, limits: Limits, mounts: dict[str, Path]) -> ManagedCgroup:
    if "memory" not in mounts or "cpuacct" not in mounts:
        raise CgroupError("cgroup v1 needs the memory and cpuacct controllers mounted")
    dirs: dict[str, Path] = {}
    made: list[Path] = []
    try:
        for controller in V1_CONTROLLERS:
            if controller not in mounts:
                continue
            parent = mounts[controller] / BENCH_DIR
            child = parent / name
            dirs[controller] = child
            if child in made:  # co-mounted controllers, e.g. cpu,cpuacct
                continue
            _mkdir(parent, exist_ok=True)
            if controller == "cpuset":
                _init_cpuset(parent, None)
            _mkdir(child, exist_ok=False)
            made.append(child)
        managed = ManagedCgroup(name, CgroupLocation("v1", dirs), tuple(made))
        _apply_v1_limits(dirs, limits)
    except BaseException:
        ManagedCgroup(name, CgroupLocation("v1", dirs), tuple(made)).remove(1.0)
        raise
    return managed


def _init_cpuset(directory: Path, cpus: str | None) -> None:
    """Set cpus (given, else the parent's when empty) and mems (the parent's when empty).

    A new v1 cpuset starts with empty cpus and mems and refuses tasks (ENOSPC) until set.
    """
    for key, value in (("cpus", cpus), ("mems", None)):
        path = directory / f"cpuset.{key}"
        if value is None and _fs.read(path).strip():
            continue
        _fs.write(path, value or _fs.read(directory.parent / f"cpuset.{key}").strip())


def _apply_v1_limits(dirs: dict[str, Path], limits: Limits) -> None:
    if "cpuset" in dirs:
        _init_cpuset(dirs["cpuset"], limits.cpuset)
    elif limits.cpuset is not None:
        raise CgroupError("a cpuset limit needs the v1 cpuset controller mounted")
    if limits.cpu_quota_us is not None:
        cpu = _need(dirs, "cpu", "a cpus limit")
        _fs.write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        _fs.write(cpu / "cpu.cfs_quota_us", str(limits.cpu_quota_us))
    if limits.memory_bytes is not None:
        memory = dirs["memory"]
        _fs.write(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
        memsw = memory / "memory.memsw.limit_in_bytes"
        if memsw.exists():  # equal limits = no swap (absent when swapaccount=0)
            _fs.write(memsw, str(limits.memory_bytes))
        else:
            _fs.write(memory / "memory.swappiness", "0")
    if limits.pids is not None:
        _fs.write(_need(dirs, "pids", "a pids limit") / "pids.max", str(limits.pids))


def _need(dirs: dict[str, Path], controller: str, what: str) -> Path:
    if controller not in dirs:
        raise CgroupError(f"{what} needs the {controller} controller; mount or enable it")
    return dirs[controller]


def _create_v2(name: str, limits: Limits, root: Path) -> ManagedCgroup:
    parent = _v2_bench_parent(root)
    child = parent / name
    _mkdir(child, exist_ok=False)
    managed = ManagedCgroup(name, CgroupLocation("v2", {"unified": child}), (child,))
    try:
        enabled = set(_fs.read(child / "cgroup.controllers").split())
        if limits.cpu_quota_us is not None:
            _need_v2(enabled, "cpu", "a cpus limit")
            _fs.write(child / "cpu.max", f"{limits.cpu_quota_us} {CPU_PERIOD_US}")
        if limits.cpuset is not None:
            _need_v2(enabled, "cpuset", "a cpuset limit")
            _fs.write(child / "cpuset.cpus", limits.cpuset)
        if limits.memory_bytes is not None:
            _need_v2(enabled, "memory", "a memory limit")
            _fs.write(child / "memory.max", str(limits.memory_bytes))
            if (child / "memory.swap.max").exists():  # absent without swap accounting
                _fs.write(child / "memory.swap.max", "0")
        if limits.pids is not None:
            _need_v2(enabled, "pids", "a pids limit")
            _fs.write(child / "pids.max", str(limits.pids))
    except BaseException:
        managed.remove(1.0)
        raise
    return managed


def _need_v2(enabled: set[str], controller: str, what: str) -> None:
    if controller not in enabled:
        raise CgroupError(
            f"{what} needs the {controller} controller, which the parent does not delegate; "
            f"add +{controller} to the parent's cgroup.subtree_control"
        )


def _v2_bench_parent(root: Path) -> Path:
    """root/bench with controllers delegated; else own-cgroup/bench (BenchExec's way)."""
    try:
        _enable_controllers(root)
        return _ensure_bench_dir(root)
    except CgroupError as first:
        base = _own_v2_cgroup(root)
        # EBUSY: a namespace root that holds processes; anything else at the real root
        # (EACCES, EROFS) would fail below too, and evacuating the real root is wrong.
        if base == root and _errno(first) != errno.EBUSY:
            raise CgroupError(f"{first}. {FIX_ROOT}") from first
        try:
            _evacuate(base)
            return _ensure_bench_dir(base)
        except CgroupError as second:
            raise CgroupError(
                f"bench (uid {os.geteuid()}) cannot create cgroups: not under {root} "
                f"({first}), nor under its own cgroup {base}, which is not delegated to it "
                f"({second}). {FIX_ROOT}"
            ) from second


def _errno(exc: BaseException) -> int | None:
    cause = exc.__cause__
    return cause.errno if isinstance(cause, OSError) else None


def _own_v2_cgroup(root: Path) -> Path:
    own = root / parse_proc_cgroup(Path("/proc/self/cgroup").read_text())["unified"].lstrip("/")
    return own.parent if own.name == SELF_LEAF else own


@dataclass
class _Evacuation:
    """What _evacuate changed in a delegated cgroup, for restore_own_cgroup to undo."""

    base: Path
    pid: int  # the process that did it: a forked child must not undo it
    enabled: list[str] = field(default_factory=list)


_EVACUATIONS: dict[Path, _Evacuation] = {}


def _evacuate(base: Path) -> None:
    """Move every process of `base` into base/harness, then let `base` delegate controllers.

    A cgroup with processes cannot enable controllers for its children (cgroup-v2.rst,
    "No Internal Process Constraint"). Undone at exit by restore_own_cgroup.
    """
    leaf = base / SELF_LEAF
    _mkdir(leaf, exist_ok=True, fix="")
    evacuation = _EVACUATIONS.get(base)
    if evacuation is None or evacuation.pid != os.getpid():
        evacuation = _EVACUATIONS[base] = _Evacuation(base, os.getpid())
        if len(_EVACUATIONS) == 1:
            atexit.register(restore_own_cgroup)
    for pid in _fs.procs(base):
        with contextlib.suppress(CgroupError):  # it may have exited meanwhile
            _fs.write(leaf / "cgroup.procs", str(pid))
    evacuation.enabled.extend(_enable_controllers(base))


def restore_own_cgroup() -> None:
    """Undo _evacuate once bench's cgroups are gone: controllers off, processes back, no leaf.

    Leaves everything as it is while a bench cgroup remains (for `bench gc`). Registered
    with atexit; errors are ignored (another process may be using the same cgroup).
    """
    for base, evacuation in list(_EVACUATIONS.items()):
        if evacuation.pid != os.getpid():
            continue
        with contextlib.suppress(OSError):  # ENOTEMPTY/EBUSY: a trial cgroup remains
            (base / BENCH_DIR).rmdir()
        if (base / BENCH_DIR).exists():
            continue
        leaf = base / SELF_LEAF
        with contextlib.suppress(CgroupError):
            if evacuation.enabled:
                _fs.write(
                    base / "cgroup.subtree_control",
                    " ".join(f"-{c}" for c in evacuation.enabled),
                )
            for pid in _fs.procs(leaf):
                with contextlib.suppress(CgroupError):
                    _fs.write(base / "cgroup.procs", str(pid))
            _fs.rmdir(leaf, 1.0)
        del _EVACUATIONS[base]


def _enable_controllers(directory: Path) -> list[str]:
    """Enable bench's controllers that `directory` has for its children; those it enabled."""
    available = set(_fs.read(directory / "cgroup.controllers").split())
    enabled = set(_fs.read(directory / "cgroup.subtree_control").split())
    missing = [c for c in V2_CONTROLLERS if c in available and c not in enabled]
    if missing:
        _fs.write(directory / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))
    return missing


def _ensure_bench_dir(base: Path) -> Path:
    """base/bench, made if missing, with controllers enabled; it must be writable by us.

    Root may have made it (another bench run): a delegated user then falls back instead
    of failing at its first mkdir.
    """
    parent = base / BENCH_DIR
    _mkdir(parent, exist_ok=True, fix="")
    if not os.access(parent, os.W_OK):
        denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(parent))
        raise CgroupError(f"cannot create cgroups in {parent}: not writable") from denied
    _enable_controllers(parent)
    return parent


def bench_parents() -> list[Path]:
    """Every directory under which bench creates cgroups on this host."""
    mounts = cgroup_mounts()
    parents = {mounts[c] / BENCH_DIR for c in V1_CONTROLLERS if c in mounts}
    # Runtimes started in a bench cgroup add it to the other hierarchies too.
    parents |= {mount / BENCH_DIR for mount in hierarchy_mounts()}
    if "unified" in mounts:
        root = mounts["unified"]
        parents.add(root / BENCH_DIR)
        with contextlib.suppress(OSError, KeyError):
            parents.add(_own_v2_cgroup(root) / BENCH_DIR)
    return sorted(parents)


def list_bench_cgroups() -> list[Path]:
    """Cgroup directories bench created that still exist, deepest first."""
    found = [sub for parent in bench_parents() for sub in _fs.subtree(parent)]
    return sorted(found, key=lambda p: (-len(p.parts), str(p)))


def remove_bench_cgroups() -> int:
    """Kill the processes in, then remove, every bench cgroup (deepest first); how many went."""
    removed = 0
    for directory in list_bench_cgroups():
        _fs.kill_until_empty(directory, 5.0)
        with contextlib.suppress(CgroupError):
            _fs.rmdir(directory, 2.0)
            removed += 1
    return removed


def can_create_cgroups() -> tuple[bool, str]:
    """Whether bare-metal runs can create cgroups here; the reason/fix when not (bench doctor)."""
    try:
        managed = create_cgroup(f"bench-probe-{os.getpid()}", Limits())
    except BenchError as exc:
        return False, str(exc)
    where = managed.dirs[0].parent
    managed.remove()
    return True, f"bench cgroups go under {where} ({managed.location.version})"


def _mkdir(directory: Path, *, exist_ok: bool, fix: str = FIX_ROOT) -> None:
    try:
        directory.mkdir(exist_ok=exist_ok)
    except FileExistsError as exc:
        raise CgroupError(
            f"cgroup {directory} already exists: a previous run left it; run `bench gc`"
        ) from exc
    except OSError as exc:
        message = f"cannot create cgroup {directory}: {exc.strerror}"
        raise CgroupError(f"{message}. {fix}" if fix else message) from exc
