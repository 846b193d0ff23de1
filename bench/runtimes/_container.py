"""Shared part of the container runtimes: the constant wrapper command and its control FIFO.

The wrapper keeps the container (and so its cgroup) alive after the workload exits, so the
final cumulative counters stay readable; it reports "S" (started) and "E <code>" (exited)
through a FIFO in the bind-mounted io dir. See docs/architecture.md, "Containers".
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import select
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from bench.cgroups.locate import locate
from bench.cgroups.model import CgroupLocation, CgroupSnapshot
from bench.cgroups.oomwatch import OomWatch
from bench.errors import BenchError
from bench.runtimes._network import Endpoints, check_spec, endpoints
from bench.runtimes._oci import check_network, dies_whole_on_oom
from bench.runtimes.base import ExitInfo
from bench.spec import CPU_PERIOD_US, NAME_PREFIX, STDERR_FILE, STDOUT_FILE, Limits, StartSpec

if TYPE_CHECKING:
    from bench.image import WorkloadImage

T = TypeVar("T")

IO_MOUNT = "/bench"
"""Where the per-trial io dir is bind-mounted in every container (also the working dir)."""

FIFO_NAME = "ctl"
BUSYBOX = "/bin/busybox"
WRAPPER_ARGV0 = "bench-wrapper"

# A constant script: the workload argv arrives as "$@", never spliced into shell text.
WRAPPER_SCRIPT = (
    f"echo S > {IO_MOUNT}/{FIFO_NAME}; "
    f'"$@" > {IO_MOUNT}/{STDOUT_FILE} 2> {IO_MOUNT}/{STDERR_FILE} < /dev/null; '
    f'echo "E $?" > {IO_MOUNT}/{FIFO_NAME}; '
    f"exec {BUSYBOX} sleep 2147483647"
)

# How often ContainerHandle.wait asks the runtime whether the container died on its own
# (e.g. the wrapper itself was OOM-killed and so never wrote "E").
_POLL_INTERVAL_S = 1.0


def run_all(first: Callable[[], None], *rest: Callable[[], None]) -> None:
    """Call each step in order, every one even when one before it raised (that error goes on)."""
    try:
        first()
    finally:
        if rest:
            run_all(*rest)


@contextlib.contextmanager
def undone_on_error(*undo: Callable[[], None]) -> Iterator[None]:
    """Run the `undo` steps (with run_all) when the block raises, then let the error go on."""
    try:
        yield
    except BaseException:
        run_all(*undo)
        raise


def wrapper_argv(argv: tuple[str, ...] | list[str]) -> list[str]:
    """The container's command: the constant wrapper script running `argv`."""
    if not argv:
        raise BenchError("a workload needs a command: its argv is empty")
    return [BUSYBOX, "sh", "-c", WRAPPER_SCRIPT, WRAPPER_ARGV0, *argv]


@dataclass(frozen=True)
class _Line:
    text: str
    monotonic_s: float


class ControlFifo:
    """The host end of io_dir/ctl: timestamps each line the wrapper writes, as it arrives.

    Opened O_RDWR so the read end never sees EOF when a container-side writer closes
    (Linux allows O_RDWR on FIFOs, fifo(7)). A reader thread stamps each line with
    time.monotonic() the moment it is readable, so a slow runtime API call does not
    inflate the measured start latency.
    """

    def __init__(self, io_dir: Path, name: str = FIFO_NAME) -> None:
        self.path = io_dir / name
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISFIFO(self.path.lstat().st_mode):
                raise BenchError(f"{self.path} exists and is not a FIFO; remove it")
            self.path.unlink()
        os.mkfifo(self.path, 0o600)
        self._fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)
        self._wake_r, self._wake_w = os.pipe()
        self._lines: queue.Queue[_Line] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._read_loop, name="bench-fifo", daemon=True)
        self._thread.start()

    def _read_loop(self) -> None:
        pending = b""
        while True:
            ready, _, _ = select.select([self._fd, self._wake_r], [], [])
            now = time.monotonic()
            if self._wake_r in ready:
                return
            try:
                chunk = os.read(self._fd, 4096)
            except BlockingIOError:
                continue
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                text = raw.decode(errors="replace").strip()
                if text:
                    self._lines.put(_Line(text, now))

    def _next_line(self, deadline: float) -> _Line | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            try:
                return self._lines.get_nowait()
            except queue.Empty:
                return None
        try:
            return self._lines.get(timeout=remaining)
        except queue.Empty:
            return None

    def wait_line(self, text: str, timeout_s: float) -> float | None:
        """time.monotonic() at which the line `text` arrived (others are skipped); None
        when it did not come within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while (line := self._next_line(deadline)) is not None:
            if line.text == text:
                return line.monotonic_s
        return None

    def wait_started(self, timeout_s: float) -> float:
        """time.monotonic() at which the wrapper's "S" arrived; BenchError on timeout."""
        started = self.wait_line("S", timeout_s)
        if started is not None:
            return started
        raise BenchError(
            f"the container did not start its workload within {timeout_s:.0f} s (no 'S' on "
            f"{self.path}); check the runtime's logs and that the image has {BUSYBOX}"
        )

    def wait_exit(self, timeout_s: float) -> int | None:
        """The workload's exit code from the wrapper's "E <code>" line; None on timeout."""
        deadline = time.monotonic() + timeout_s
        while (line := self._next_line(deadline)) is not None:
            kind, _, code = line.text.partition(" ")
            if kind == "E":
                try:
                    return int(code)
                except ValueError as exc:
                    raise BenchError(f"malformed exit line {line.text!r} on {self.path}") from exc
        return None

    def close(self) -> None:
        """Stop the reader thread, close the descriptors and remove the FIFO. Idempotent."""
        if self._closed:
            return
        self._closed = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self._fd, self._wake_r, self._wake_w):
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


@dataclass
class ContainerHandle:
    """A started container (implements bench.runtimes.base.Handle).

    `kill` and `remove` come from the runtime and must tolerate an already-gone
    container. `poll_exit`, when given, returns the container's own exit code once it is
    no longer running (None while it runs), so wait() notices a wrapper that died.
    """

    name: str
    pid: int
    cgroup: CgroupLocation
    start_latency_s: float
    fifo: ControlFifo
    kill: Callable[[], None]
    remove: Callable[[], None]
    poll_exit: Callable[[], int | None] | None = None
    endpoints: Endpoints | None = None
    helpers: Callable[[], list[int]] | None = None
    oom_watch: OomWatch | None = None
    boot_s: float | None = None
    _exit: ExitInfo | None = field(default=None, init=False, repr=False)
    _stopped: bool = field(default=False, init=False, repr=False)

    def wait(self, timeout_s: float) -> ExitInfo | None:
        """Block until the workload exits (None on timeout); the container keeps running."""
        if self._exit is not None:
            return self._exit
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            slice_s = remaining if self.poll_exit is None else min(remaining, _POLL_INTERVAL_S)
            code = self.fifo.wait_exit(max(slice_s, 0.0))
            if code is None and self.poll_exit is not None:
                died = self.poll_exit()
                # An "E" written just before the container ended may still be in flight:
                # the workload's own code beats the container's.
                if died is not None:
                    late = self.fifo.wait_exit(0.2)
                    code = died if late is None else late
            if code is not None:
                self._exit = ExitInfo(exit_code=code)
                return self._exit
            if time.monotonic() >= deadline:
                return None

    def totals_after_exit(self) -> CgroupSnapshot | None:
        """The last read the OOM watch took before the engine removed the cgroup."""
        return None if self.oom_watch is None else self.oom_watch.last

    def endpoint(self, port: int) -> tuple[str, int]:
        """Where a host client reaches `port` (bench.runtimes.base.Handle.endpoint)."""
        return (self.endpoints or Endpoints(self.name, "none")).endpoint(port)

    def helper_pids(self) -> list[int]:
        """The runtime's processes carrying this container's traffic outside its cgroup."""
        return [] if self.helpers is None else self.helpers()

    def stop(self) -> float:
        """Kill and remove the container, close the FIFO; seconds taken (0.0 when repeated).

        A stop that raised (e.g. the daemon was gone) can be called again: the runner
        retries it once the runtime answers, so the container is not left behind.
        """
        if self._stopped:
            return 0.0
        started = time.monotonic()
        watch = self.oom_watch.close if self.oom_watch is not None else (lambda: None)
        run_all(self.kill, self.remove, self.fifo.close, watch)
        self._stopped = True
        return time.monotonic() - started


@dataclass(frozen=True)
class Launched:
    """What a runtime's launch callback returns for start_container().

    `address` (bridge: the container's address on the run network) and `published`
    (published: the host port of each container port) are what the runtime assigned;
    the endpoints of the modes that need neither (none, host) come from the spec alone.
    """

    pid: int
    kill: Callable[[], None]
    remove: Callable[[], None]
    poll_exit: Callable[[], int | None] | None = None
    address: str | None = None
    published: dict[int, int] | None = None
    helper_pids: Callable[[], list[int]] | None = None
    # The cgroup to measure when it is not the init pid's own (nspawn on v2: see there).
    cgroup: CgroupLocation | None = None
    # System containers: seconds from the launch until the container's init was up.
    boot_s: float | None = None


def rootfs_in_place(image: WorkloadImage) -> Path:
    """The image's rootfs directory, for runtimes that run it in place (lxc, nspawn)."""
    if not (image.rootfs_dir / "bin" / "busybox").exists():
        raise BenchError(f"{image.rootfs_dir} has no bin/busybox; rebuild the image")
    return image.rootfs_dir


def prepared_to_start(
    spec: StartSpec, runtime: str, prepared: T | None, name_re: re.Pattern[str], name_rule: str
) -> T:
    """What lxc or LXD starts `spec` from (prepare()'s result), once the spec passed their
    checks: a name of bench's that their tools take (`name_re`, said as `name_rule`)."""
    if prepared is None:
        raise BenchError(f"{runtime}: prepare(image) must run before start()")
    if not spec.name.startswith(NAME_PREFIX) or not name_re.match(spec.name):
        raise BenchError(
            f"container name {spec.name!r} must start with {NAME_PREFIX!r} and {name_rule}"
        )
    check_spec(spec, runtime)
    return prepared


def image_to_start(spec: StartSpec, runtime: str, image_ref: str | None) -> str:
    """The image an engine starts `spec` from, once the spec passed the checks all engines make."""
    if image_ref is None:
        raise BenchError(f"{runtime}: prepare(image) must run before start()")
    if not spec.name.startswith(NAME_PREFIX):
        raise BenchError(f"container name {spec.name!r} must start with {NAME_PREFIX!r}")
    check_spec(spec, runtime)
    refused = check_network(spec.oci_runtime, spec.network, spec.name)
    if refused:
        raise BenchError(refused)
    return image_ref


def start_container(
    spec: StartSpec,
    launch: Callable[[list[str]], Launched],
    start_timeout_s: float = 60.0,
) -> ContainerHandle:
    """Create the FIFO, launch the wrapper via the runtime, wait for "S", locate the cgroup.

    `launch` receives the container command (wrapper_argv(spec.argv)) and must return
    once the container runs, with its init pid on the host. On any failure after the
    launch the container is killed and removed before the error propagates.
    """
    fifo = ControlFifo(spec.io_dir)
    if spec.user is not None:  # the wrapper runs as the scenario's user and writes to it
        os.chown(fifo.path, *spec.user)
    requested = time.monotonic()
    with undone_on_error(fifo.close):
        launched = launch(wrapper_argv(spec.argv))
    with undone_on_error(launched.kill, launched.remove, fifo.close):
        started = fifo.wait_started(start_timeout_s)
        cgroup = launched.cgroup or locate(launched.pid)
        reached = endpoints(spec, launched.address, launched.published)
        oom_watch = OomWatch(cgroup) if dies_whole_on_oom(spec.oci_runtime) else None
    return ContainerHandle(
        name=spec.name,
        pid=launched.pid,
        cgroup=cgroup,
        start_latency_s=started - requested,
        fifo=fifo,
        kill=launched.kill,
        remove=launched.remove,
        poll_exit=launched.poll_exit,
        endpoints=reached,
        helpers=launched.helper_pids,
        oom_watch=oom_watch,
        boot_s=launched.boot_s,
    )


def engine_limit_options(limits: Limits) -> dict[str, int | str]:
    """Limits as the keyword arguments docker-py and podman-py both take.

    Quota/period rather than nano_cpus: podman-py drops nano_cpus silently (docs/host-notes.md).
    memswap_limit equal to mem_limit means no swap.
    """
    options: dict[str, int | str] = {}
    if limits.cpu_quota_us is not None:
        options["cpu_period"] = CPU_PERIOD_US
        options["cpu_quota"] = limits.cpu_quota_us
    if limits.cpuset is not None:
        options["cpuset_cpus"] = limits.cpuset
    if limits.memory_bytes is not None:
        options["mem_limit"] = limits.memory_bytes
        options["memswap_limit"] = limits.memory_bytes
    if limits.pids is not None:
        options["pids_limit"] = limits.pids
    return options
