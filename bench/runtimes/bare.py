"""Bare metal: the workload runs as bench's child in a cgroup bench creates for it."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import threading
import time
from typing import TYPE_CHECKING

from bench.cgroups.manage import (
    FIX_ROOT,
    ManagedCgroup,
    can_create_cgroups,
    create_cgroup,
    list_bench_cgroups,
    remove_bench_cgroups,
)
from bench.errors import BenchError
from bench.runtimes._network import Endpoints, check_spec, endpoints
from bench.runtimes._process import spawn
from bench.runtimes.base import Availability, ExitInfo
from bench.spec import STDERR_FILE, STDOUT_FILE

if TYPE_CHECKING:
    from bench.cgroups.model import CgroupLocation
    from bench.image import WorkloadImage
    from bench.spec import StartSpec

_RLIMITS = {"nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC}


class BareHandle:
    """A workload started by BareRuntime; a waiter thread reaps it with wait4 for rusage."""

    def __init__(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        cgroup: ManagedCgroup,
        start_latency_s: float,
        ports: Endpoints,
    ) -> None:
        self.name = name
        self._endpoints = ports
        self.pid = proc.pid
        self.cgroup: CgroupLocation = cgroup.location
        self.start_latency_s = start_latency_s
        self.boot_s: float | None = None
        self._proc = proc
        self._managed = cgroup
        self._exit: ExitInfo | None = None
        self._done = threading.Event()
        self._stopped = False
        self._waiter = threading.Thread(target=self._reap, name=f"bench-wait-{name}", daemon=True)
        self._waiter.start()

    def _reap(self) -> None:
        _pid, status, usage = os.wait4(self.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        self._proc.returncode = code  # reaped here: keep Popen from waiting on a lost pid
        self._exit = ExitInfo(
            exit_code=128 - code if code < 0 else code,
            rusage_user_s=usage.ru_utime,
            rusage_sys_s=usage.ru_stime,
        )
        self._done.set()

    def wait(self, timeout_s: float) -> ExitInfo | None:
        """The exit of the workload's main process, or None after `timeout_s`.

        The cgroup stays, so its final counters can be read before stop().
        """
        self._done.wait(timeout_s)
        return self._exit

    def endpoint(self, port: int) -> tuple[str, int]:
        """127.0.0.1 and the port itself: bare metal on loopback, every mode's baseline."""
        return self._endpoints.endpoint(port)

    def helper_pids(self) -> list[int]:
        """None: the kernel's loopback carries the traffic."""
        return []

    def stop(self) -> float:
        """Kill everything in the cgroup, reap the child, remove the cgroup; seconds taken."""
        started = time.perf_counter()
        if not self._stopped:
            self._managed.kill_all()
            if not self._done.wait(10.0):
                raise BenchError(f"pid {self.pid} of {self.name} was not reaped after SIGKILL")
            self._managed.remove()
            self._stopped = True
        return time.perf_counter() - started


class BareRuntime:
    """Runs the workload's argv directly, in a fresh cgroup with the trial's limits."""

    name = "bare"

    def available(self) -> Availability:
        ok, why = can_create_cgroups()
        return Availability(ok=True) if ok else Availability(ok=False, reason=why, fix=FIX_ROOT)

    def version(self) -> str:
        return platform.release()

    def default_oci_runtime(self) -> None:
        """No OCI runtime: the workload is the host's own process."""

    def prepare(self, image: WorkloadImage) -> None:
        """Nothing to import: the bare run executes the host's files directly."""

    def start(self, spec: StartSpec) -> BareHandle:
        # "none" keeps the host's stack too (bare metal has no network of its own to take
        # away); it only means that no endpoint is offered.
        check_spec(spec, self.name)
        cgroup = create_cgroup(spec.name, spec.limits)
        rlimits = lowered_rlimits(spec.rlimits)

        user = spec.user

        def in_child() -> None:
            # Runs between fork and exec: only a write(2) per controller, setrlimit and,
            # last, dropping to the scenario's user (Popen's own user= would drop before
            # preexec_fn, and then the write to cgroup.procs is refused).
            cgroup.join_current_process()
            for which, soft, hard in rlimits:
                resource.setrlimit(which, (soft, hard))
            if user is not None:
                os.setgroups([])
                os.setgid(user[1])
                os.setuid(user[0])

        try:
            with (
                open(spec.io_dir / STDOUT_FILE, "wb") as stdout,
                open(spec.io_dir / STDERR_FILE, "wb") as stderr,
            ):
                started = time.perf_counter()
                # in_child takes no lock and imports nothing, so bench's other threads
                # cannot deadlock it (the preexec_fn caveat in the subprocess docs).
                proc = spawn(spec.argv, stdout, stderr=stderr, cwd=spec.io_dir, preexec_fn=in_child)
                latency_s = time.perf_counter() - started
        except OSError as exc:
            cgroup.remove()
            raise BenchError(
                f"cannot start {spec.argv[0]!r} for {spec.name}: {exc.strerror}; check the "
                "workload's argv and that its binary exists on this host"
            ) from exc
        except subprocess.SubprocessError as exc:  # in_child failed
            cgroup.remove()
            raise BenchError(
                f"cannot move {spec.name}'s process into {cgroup.location.display} or set its "
                f"rlimits: {exc}"
            ) from exc
        except BaseException:
            cgroup.kill_all()
            cgroup.remove()
            raise
        return BareHandle(spec.name, proc, cgroup, latency_s, endpoints(spec))

    def footprint_pids(self) -> list[int]:
        return []

    def leftovers(self) -> list[str]:
        return [str(path) for path in list_bench_cgroups()]

    def remove_leftovers(self) -> int:
        return remove_bench_cgroups()

    def close(self) -> None:
        """Nothing to release."""


def lowered_rlimits(
    rlimits: tuple[tuple[str, int, int], ...],
) -> list[tuple[int, int, int]]:
    """The setrlimit calls to make in the child: never above the current hard limit.

    Raising a hard limit needs CAP_SYS_RESOURCE, which bench must not assume (docs/host-notes.md).
    """
    calls = []
    for name, soft, hard in rlimits:
        which = _RLIMITS.get(name)
        if which is None:
            raise BenchError(f"unknown rlimit {name!r}; bench sets only {', '.join(_RLIMITS)}")
        cur_soft, cur_hard = resource.getrlimit(which)
        new_hard = hard if cur_hard == resource.RLIM_INFINITY else min(hard, cur_hard)
        new_soft = min(soft, new_hard)
        if (new_soft, new_hard) != (cur_soft, cur_hard):
            calls.append((which, new_soft, new_hard))
    return calls
