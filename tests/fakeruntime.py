"""A runtime that runs nothing: each workload is a copy of a fixture cgroup tree, scripted.

In the spirit of hyperfine's mock executor: the runner's policies (statuses, giving a
runtime up, resume, interruption, the run's verdict) run end to end through the real
runner, result store, sampler and cgroup readers, in milliseconds and without root. A
test says per workload what happens (exit code, OOM kills, never exiting, start, wait
or stop raising) through a Script; the handle's cgroup is a copy of
tests/fixtures/cgroup/v1 or v2 under the test's tmp_path, read by bench's own readers.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.cgroups.model import CgroupLocation, HierarchyVersion
from bench.errors import BenchError
from bench.runtimes import registry
from bench.runtimes.base import Availability, Capabilities, ExitInfo

if TYPE_CHECKING:
    from bench.image import WorkloadImage
    from bench.spec import StartSpec

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "cgroup"
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "blkio")
# The OOM kill counter of each tree: memory.events (v2), memory.oom_control (v1).
OOM_FILES = {"v2": Path("memory.events"), "v1": Path("memory") / "memory.oom_control"}
STOP_S = 0.001


@dataclass
class Script:
    """What one fake workload does."""

    exit_code: int | None = 0  # None: it never exits (the trial times out)
    oom_kills: int = 0  # added to its cgroup's OOM kill counter before it exits
    start_error: BaseException | None = None  # start() raises it
    wait_error: BaseException | None = None  # wait() raises it (the runtime broke)
    stop_errors: int = 0  # how many stop() calls raise before one succeeds
    on_start: Callable[[], None] | None = None  # run inside start(), e.g. send a signal
    on_wait: Callable[[], None] | None = None  # run inside wait()


@dataclass
class FakeHandle:
    """A started fake workload (implements bench.runtimes.base.Handle)."""

    name: str
    trial_id: str
    runtime: str
    cgroup: CgroupLocation
    tree: Path
    script: Script
    pid: int = 0
    start_latency_s: float = 0.002
    boot_s: float | None = None
    stops: int = 0
    stopped: bool = False

    def wait(self, timeout_s: float) -> ExitInfo | None:
        if self.script.on_wait is not None:
            self.script.on_wait()
        if self.script.wait_error is not None:
            raise self.script.wait_error
        code = self.script.exit_code
        if code is None:
            return None  # "still running" at once: a fake timeout costs no time
        if self.script.oom_kills:
            _add_oom_kills(self.cgroup, self.script.oom_kills)
            self.script = dataclasses.replace(self.script, oom_kills=0)
        return ExitInfo(code)

    def totals_after_exit(self) -> None:
        return None

    def endpoint(self, port: int) -> tuple[str, int]:
        raise BenchError(f"{self.name}: the fake runtime has network mode none only")

    def helper_pids(self) -> list[int]:
        return []

    def stop(self) -> float:
        self.stops += 1
        if self.stops <= self.script.stop_errors:
            raise ConnectionError(f"fake runtime {self.runtime} does not answer")
        if not self.stopped:  # the runtime removes the cgroup, as the real ones do
            shutil.rmtree(self.tree)
        self.stopped = True
        return STOP_S


@dataclass
class FakeHost:
    """What every fake runtime of one test shares: the scripts and what happened."""

    root: Path
    version: HierarchyVersion = "v2"
    # By workload label (the command's second word), or (runtime name, label) first.
    scripts: dict[str | tuple[str, str], Script] = field(default_factory=dict)
    # Per runtime: what available() answers, in turn (the last one repeats).
    availability: dict[str, list[Availability]] = field(default_factory=dict)
    handles: list[FakeHandle] = field(default_factory=list)
    # OCI runtimes a fake engine (oci_axis=True) cannot run, and why; the others run.
    oci_refused: dict[str, Availability] = field(default_factory=dict)
    closed: list[str] = field(default_factory=list)

    def script_for(self, runtime: str, spec: StartSpec) -> Script:
        label = spec.argv[1] if len(spec.argv) > 1 else ""
        return self.scripts.get((runtime, label)) or self.scripts.get(label) or Script()

    def started(self, trial_id: str | None = None) -> list[FakeHandle]:
        return [h for h in self.handles if trial_id is None or h.trial_id == trial_id]


class FakeRuntime:
    """Implements bench.runtimes.base.Runtime over the current FakeHost."""

    name = "fake"
    host: FakeHost | None = None  # set by registered()

    def __init__(self) -> None:
        if FakeRuntime.host is None:
            raise RuntimeError("FakeRuntime is used outside tests.fakeruntime.registered()")
        self._host = FakeRuntime.host

    def available(self) -> Availability:
        answers = self._host.availability.get(self.name) or [Availability(True)]
        return answers.pop(0) if len(answers) > 1 else answers[0]

    def version(self) -> str:
        return "fake 1.0"

    def default_oci_runtime(self) -> str | None:
        return None

    def oci_runtime_available(self, oci_runtime: str) -> Availability:
        return self._host.oci_refused.get(oci_runtime, Availability(True))

    def oci_runtime_version(self, oci_runtime: str) -> str:
        return f"{oci_runtime} fake 1.0"

    def prepare(self, image: WorkloadImage) -> None:
        raise AssertionError("the fake runtime declares needs_image=False")

    def start(self, spec: StartSpec) -> FakeHandle:
        script = self._host.script_for(self.name, spec)
        if script.on_start is not None:
            script.on_start()
        if script.start_error is not None:
            raise script.start_error
        tree = Path(shutil.copytree(FIXTURES / self._host.version, self._host.root / spec.name))
        if self._host.version == "v2":
            location = CgroupLocation("v2", {"unified": tree})
        else:
            location = CgroupLocation("v1", {c: tree / c for c in V1_CONTROLLERS})
        # The io dir is trials/<trial id> of the run (bench.store.ResultStore.trial_dir).
        handle = FakeHandle(spec.name, spec.io_dir.name, self.name, location, tree, script)
        self._host.handles.append(handle)
        return handle

    def footprint_pids(self) -> list[int]:
        return []

    def leftovers(self) -> list[str]:
        return [h.name for h in self._host.handles if h.runtime == self.name and not h.stopped]

    def remove_leftovers(self) -> int:
        left = [h for h in self._host.handles if h.runtime == self.name and not h.stopped]
        for handle in left:
            handle.stopped = True
        return len(left)

    def close(self) -> None:
        self._host.closed.append(self.name)


def entry(name: str, order: int, oci_axis: bool = False) -> registry.Entry:
    """A registry entry of a fake runtime: no image, no processes of its own."""
    return registry.Entry(
        name,
        __name__,
        FakeRuntime.__name__,
        order=order,
        colour="#999999",
        capabilities=Capabilities(
            needs_image=False,
            oci_runtime_axis=oci_axis,
            network_modes=frozenset({"none"}),
            own_processes=False,
        ),
    )


@contextmanager
def registered(host: FakeHost, *names: str, oci_axis: bool = False) -> Iterator[FakeHost]:
    """Fake runtimes called `names` in the registry, all over `host`, for one test."""
    FakeRuntime.host = host
    for order, name in enumerate(names, start=900):
        registry.register(entry(name, order, oci_axis))
    try:
        yield host
    finally:
        for name in names:
            registry.unregister(name)
        FakeRuntime.host = None


def _add_oom_kills(location: CgroupLocation, kills: int) -> None:
    """Bump the oom_kill counter in place (same inode: the reader's open descriptor sees it)."""
    root = location.dirs["unified"] if location.version == "v2" else location.dirs["memory"].parent
    path = root / OOM_FILES[location.version]
    text = path.read_text()
    found = re.search(r"^oom_kill (\d+)$", text, re.MULTILINE)
    assert found is not None, f"{path} has no oom_kill line"
    start, end = found.span()
    bumped = f"{text[:start]}oom_kill {int(found.group(1)) + kills}{text[end:]}"
    with open(path, "r+") as handle:
        handle.write(bumped)
        handle.truncate()
