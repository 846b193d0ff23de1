"""Runtime fixtures: the workload image, dockerd, and each container runtime ready to start.

`container_runtime` is every container runtime in turn (docker, podman, podman-rootless, lxc,
lxc-system, lxd, containerd, systemd-nspawn) for the checks all of them must pass
(test_container_contract.py). A runtime that is missing skips its tests with the reason, and
fails them under CI=true (tests.helpers.require).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

from bench.cgroups.locate import host_cgroup_version
from bench.runtimes import _oci as oci_runtimes
from bench.runtimes import registry
from tests.helpers import WithOciRuntime, ensure_dockerd, require, require_root

if TYPE_CHECKING:
    from bench.image import WorkloadImage
    from bench.runtimes._container import ContainerHandle
    from bench.runtimes.base import Runtime
    from bench.runtimes.containerd import ContainerdRuntime
    from bench.runtimes.docker import DockerRuntime
    from bench.runtimes.lxc import LxcRuntime
    from bench.runtimes.lxc_system import LxcSystemRuntime
    from bench.runtimes.lxd import LxdRuntime
    from bench.runtimes.nspawn import NspawnRuntime
    from bench.runtimes.podman import PodmanRuntime
    from bench.runtimes.podman_rootless import PodmanRootlessRuntime

CONTAINER_RUNTIMES = (
    # Every shipped runtime but the bare-metal baseline; each has its fixture below.
    *(name for name in registry.names() if name != registry.baseline()),
    # An engine with another OCI runtime under it (a scenario's oci_runtimes axis).
    "podman+runsc",
    "docker+runsc",
    # crun refuses this hybrid host; the cgroup v2 VM runs these (tests/v2vm).
    "podman+crun",
    "docker+crun",
)

RuntimeT = TypeVar("RuntimeT", bound="Runtime")


def ready(runtime: RuntimeT, image: WorkloadImage) -> RuntimeT:
    """`runtime` with `image` prepared; skips (fails under CI) where it cannot run here."""
    availability = runtime.available()
    fix = f" ({availability.fix})" if availability.fix else ""
    require(availability.ok, availability.reason + fix)
    runtime.prepare(image)
    return runtime


def served(runtime: RuntimeT, image: WorkloadImage, outlived: str) -> Iterator[RuntimeT]:
    """Yield `runtime` ready; teardown: none of its processes outlived a container, closed."""
    yield ready(runtime, image)
    assert runtime.footprint_pids() == [], outlived
    runtime.close()


def assert_nothing_left(runtime: Runtime, label: str) -> None:
    left = runtime.leftovers()
    assert left == [], f"{label} objects left behind by the tests: {left}"


def on_private_lxcpath(
    runtime_type: Callable[[Path], RuntimeT],
    image: WorkloadImage,
    lxcpath: Path,
    tool: str,
    label: str,
) -> Iterator[RuntimeT]:
    """lxc or lxc-system (started by `tool`) on its own lxcpath; teardown: nothing left."""
    require_root()
    require(shutil.which(tool) is not None, "lxc is not installed (apt-get install lxc)")
    runtime = runtime_type(lxcpath)
    yield from served(runtime, image, f"{label}: a {tool} or its child outlived its container")
    assert not lxcpath.exists(), "close() left the empty private lxcpath"
    runtime.remove_leftovers()
    assert_nothing_left(runtime, label)


@pytest.fixture(scope="session")
def workload_image(tmp_path_factory: pytest.TempPathFactory) -> WorkloadImage:
    """The one workload image, built into a session-private cache (removed with it)."""
    from bench.image import build_image

    require(shutil.which("stress-ng") is not None, "stress-ng is not installed")
    require(Path("/bin/busybox").is_file(), "busybox-static is not installed")
    return build_image(cache_dir=tmp_path_factory.mktemp("bench-image-cache"))


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A Docker daemon answering on the default socket (started here when needed)."""
    require_root()
    log_path = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    reason = ensure_dockerd(log_path)
    require(not reason, reason)


@pytest.fixture(scope="session")
def docker_runtime(dockerd: None, workload_image: WorkloadImage) -> Iterator[DockerRuntime]:
    """DockerRuntime with the image imported; teardown removes and asserts no leftovers."""
    from bench.runtimes.docker import DockerRuntime

    runtime = ready(DockerRuntime(), workload_image)
    yield runtime
    runtime.remove_leftovers()
    assert_nothing_left(runtime, "docker")
    runtime.close()  # after leftovers(), which asks the daemon through this client


@pytest.fixture(scope="module")
def podman_runtime(workload_image: WorkloadImage) -> Iterator[PodmanRuntime]:
    """PodmanRuntime with the image imported; teardown removes and asserts no leftovers."""
    from bench.runtimes.podman import PodmanRuntime

    require_root()
    require(shutil.which("podman") is not None, "podman is not installed (apt-get install podman)")
    runtime = ready(PodmanRuntime(), workload_image)
    service_pids = runtime.service_pids()
    yield runtime
    runtime.close()
    runtime.remove_leftovers()
    assert_nothing_left(runtime, "podman")
    assert not any(Path(f"/proc/{pid}").exists() for pid in service_pids), "service still runs"


@pytest.fixture(scope="module")
def podman_rootless_runtime(workload_image: WorkloadImage) -> Iterator[PodmanRootlessRuntime]:
    """Rootless podman as bench-rootless, the image in its storage; teardown: nothing left."""
    from bench.runtimes.podman_rootless import PodmanRootlessRuntime

    require_root()
    runtime = PodmanRootlessRuntime()
    yield from served(runtime, workload_image, "a conmon or slirp4netns outlived its container")
    assert_nothing_left(runtime, "podman-rootless")


@pytest.fixture(scope="module")
def lxc_runtime(
    workload_image: WorkloadImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LxcRuntime]:
    """LxcRuntime on a private lxcpath; teardown: no monitor, entry or lxcpath left."""
    from bench.runtimes.lxc import LxcRuntime

    lxcpath = tmp_path_factory.mktemp("lxcpath") / "bench-lxc"
    yield from on_private_lxcpath(LxcRuntime, workload_image, lxcpath, "lxc-execute", "lxc")


@pytest.fixture(scope="module")
def lxc_system_runtime(
    workload_image: WorkloadImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LxcSystemRuntime]:
    """LxcSystemRuntime on a private lxcpath; teardown: no monitor, attach or entry left."""
    from bench.runtimes.lxc_system import LxcSystemRuntime

    lxcpath = tmp_path_factory.mktemp("lxcpath") / "bench-lxc-system"
    yield from on_private_lxcpath(
        LxcSystemRuntime, workload_image, lxcpath, "lxc-start", "lxc-system"
    )


@pytest.fixture(scope="module", params=["lxc", "lxc-system"])
def lxc_flavour(request: pytest.FixtureRequest) -> LxcRuntime:
    """lxc (lxc-execute) and lxc-system (lxc-start, then lxc-attach) in turn, for what both do."""
    runtime: LxcRuntime = request.getfixturevalue(f"{request.param.replace('-', '_')}_runtime")
    return runtime


@pytest.fixture(scope="module")
def lxd_runtime(workload_image: WorkloadImage) -> Iterator[LxdRuntime]:
    """LxdRuntime on the host's LXD daemon; teardown: no container, exec or monitor left."""
    from bench.runtimes.lxd import LxdRuntime

    require_root()
    require(shutil.which("lxd") is not None, "lxd is not installed (apt-get install lxd)")
    runtime = LxdRuntime()
    yield from served(runtime, workload_image, "an lxc exec or a monitor outlived its container")
    assert_nothing_left(runtime, "lxd")


@pytest.fixture(scope="module")
def containerd_runtime(workload_image: WorkloadImage) -> Iterator[ContainerdRuntime]:
    """ContainerdRuntime (the host's daemon or a private one); teardown checks nothing is left."""
    from bench.runtimes import _containerd_service as service
    from bench.runtimes.containerd import ContainerdRuntime

    require_root()
    require(
        shutil.which("ctr") is not None, "containerd is not installed (apt-get install containerd)"
    )
    runtime = ready(ContainerdRuntime(), workload_image)
    daemon = runtime._connect()
    yield runtime
    runtime.close()
    if daemon.process is not None:
        assert daemon.process.poll() is not None, "the private containerd still runs"
        assert daemon.state_dir is not None and not daemon.state_dir.exists()
        assert daemon.root_dir is not None and not daemon.root_dir.exists()
    else:
        assert (
            runtime._namespace
            not in service.ctr(daemon.address, "default", "ns", "ls", "-q").stdout
        )
    assert_nothing_left(runtime, "containerd")


@pytest.fixture(scope="module")
def systemd_nspawn_runtime(workload_image: WorkloadImage) -> Iterator[NspawnRuntime]:
    """NspawnRuntime with the image's rootfs; teardown checks no nspawn or cgroup is left."""
    from bench.runtimes.nspawn import NspawnRuntime

    require_root()
    yield from served(NspawnRuntime(), workload_image, "an nspawn outlived its container")


@pytest.fixture(scope="module", params=CONTAINER_RUNTIMES)
def container_runtime(request: pytest.FixtureRequest) -> Runtime:
    """Each container runtime in turn, through its own fixture above (skips when missing)."""
    engine, _, oci = request.param.partition("+")
    if oci and oci_runtimes.known(oci).needs_pure_hierarchy and host_cgroup_version() == "hybrid":
        # The host, not a missing install: no CI machine of this kind can run it.
        pytest.skip(f"{oci} refuses hybrid cgroup hosts; it runs in the cgroup v2 VM (tests/v2vm)")
    runtime: Runtime = request.getfixturevalue(f"{engine.replace('-', '_')}_runtime")
    if not oci:
        return runtime
    availability = runtime.oci_runtime_available(oci)  # type: ignore[attr-defined]
    require(availability.ok, f"{availability.reason} ({availability.fix})")
    return WithOciRuntime(runtime, oci)  # type: ignore[return-value]


@pytest.fixture
def io_dir(tmp_path: Path) -> Path:
    path = tmp_path / "io"
    path.mkdir()
    return path


@pytest.fixture
def started() -> Iterator[list[ContainerHandle]]:
    """Handles a test started; each is stopped even when the test fails."""
    handles: list[ContainerHandle] = []
    yield handles
    for handle in handles:
        handle.stop()
