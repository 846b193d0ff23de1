"""Keep a cgroup's totals that its owner removes the moment an OOM kill ends the container.

A sandbox (gVisor) is one kernel in host processes: an OOM kill in its cgroup kills it
whole, and the engine removes the cgroup within a fraction of a second, before bench's
final read. v1 does not propagate oom_kill to the parent (memcg_memory_event stops at the
first level on v1), so no parent keeps it. The watcher waits for the kernel's OOM
notification instead (v1: an eventfd on memory.oom_control via cgroup.event_control; v2:
poll on memory.events) and then reads the cgroup until it is gone, keeping the last read.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time

from bench.cgroups.model import CgroupLocation, CgroupSnapshot
from bench.errors import CgroupError

# Between reads once an OOM was notified: the engine takes tens of milliseconds at least
# to notice the death and remove the cgroup (one read of kept-open files is ~70 us).
_REREAD_S = 0.002
# How long after a notification it keeps reading while the cgroup still exists (a
# container whose OOM killed a worker but not the sandbox goes on normally).
_AFTER_OOM_S = 5.0


class OomWatch:
    """Reads `location` whenever the kernel reports an OOM there; `last` is the latest read."""

    def __init__(self, location: CgroupLocation) -> None:
        from bench.cgroups import open_reader

        self.location = location
        self.last: CgroupSnapshot | None = None
        self._reader = open_reader(location)
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._fds: list[int] = []
        self._poll = select.poll()
        self._poll.register(self._wake_r, select.POLLIN)
        try:
            self._arm()
        except BaseException:
            self._close_fds()
            raise
        self._thread = threading.Thread(target=self._loop, name="bench-oomwatch", daemon=True)
        self._thread.start()

    def _arm(self) -> None:
        memory = self.location.dir_for("memory")
        if memory is None:
            raise CgroupError(f"no memory controller for {self.location.display}")
        try:
            if self.location.version == "v1":
                event = os.eventfd(0, os.EFD_CLOEXEC)
                self._fds.append(event)
                control = os.open(memory / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
                self._fds.append(control)
                with open(memory / "cgroup.event_control", "w") as registration:
                    registration.write(f"{event} {control}")
                self._poll.register(event, select.POLLIN)
            else:
                events = os.open(memory / "memory.events", os.O_RDONLY | os.O_CLOEXEC)
                self._fds.append(events)
                os.pread(events, 4096, 0)  # kernfs notifies changes after the first read
                self._poll.register(events, select.POLLPRI | select.POLLERR)
        except OSError as exc:
            raise CgroupError(f"cannot watch OOM events of {memory}: {exc}") from exc

    def _loop(self) -> None:
        while True:
            ready = {fd for fd, _ in self._poll.poll()}
            if self._wake_r in ready:
                return
            for fd in ready:  # consume the notification (v1: the eventfd's count)
                with contextlib.suppress(OSError):
                    if self.location.version == "v1":
                        os.read(fd, 8)
                    else:
                        os.pread(fd, 4096, 0)
            if self._read_until_gone():
                return

    def _read_until_gone(self) -> bool:
        """Read until the cgroup is removed (True) or settles after the OOM (False)."""
        deadline = time.monotonic() + _AFTER_OOM_S
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                self.last = self._reader.read()
            except CgroupError:
                return True
            time.sleep(_REREAD_S)
        return self._stop.is_set()

    def close(self) -> None:
        """Stop the thread and release every descriptor. Idempotent."""
        if self._wake_w < 0:
            return
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        self._close_fds()

    def _close_fds(self) -> None:
        self._reader.close()
        for fd in (*self._fds, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
        self._wake_r = self._wake_w = -1
