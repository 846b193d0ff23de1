"""Integration fixtures: the workload image (built once per session) and a running dockerd."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import require, require_root

if TYPE_CHECKING:
    from bench.image import WorkloadImage
    from bench.runtimes.docker import DockerRuntime

DOCKER_SOCKET = Path("/var/run/docker.sock")
DOCKERD_READY_TIMEOUT_S = 60.0


@pytest.fixture(scope="session")
def workload_image(tmp_path_factory: pytest.TempPathFactory) -> WorkloadImage:
    """The one workload image, built into a session-private cache (removed with it)."""
    from bench.image import build_image

    require(shutil.which("stress-ng") is not None, "stress-ng is not installed")
    require(Path("/bin/busybox").is_file(), "busybox-static is not installed")
    return build_image(cache_dir=tmp_path_factory.mktemp("bench-image-cache"))


def docker_answers() -> bool:
    from bench.runtimes.docker import DockerRuntime

    runtime = DockerRuntime()
    try:
        return runtime.available().ok
    finally:
        runtime.close()


def ensure_dockerd(log_path: Path, timeout_s: float = DOCKERD_READY_TIMEOUT_S) -> str:
    """Start dockerd in the background unless a daemon already answers; "" or why not.

    The daemon is left running: CI starts it before the tests anyway, and stopping it
    would break anyone else using it. Its log goes to `log_path`.
    """
    if docker_answers():
        return ""
    if os.environ.get("DOCKER_HOST"):
        return f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer"
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        return "dockerd is not installed (apt-get install docker.io)"
    if os.geteuid() != 0:
        return "dockerd is not running and only root can start it"
    # Someone else may be starting it right now: give an existing dockerd time first.
    if not _dockerd_process_exists():
        with log_path.open("ab") as log:
            subprocess.Popen(
                [dockerd],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the test session; CI may reuse it
            )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if DOCKER_SOCKET.exists() and docker_answers():
            return ""
        time.sleep(0.5)
    return f"dockerd did not answer within {timeout_s:.0f} s; see {log_path}"


def _dockerd_process_exists() -> bool:
    import psutil

    return any(p.info["name"] == "dockerd" for p in psutil.process_iter(["name"]))


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

    runtime = DockerRuntime()
    availability = runtime.available()
    require(availability.ok, availability.reason)
    runtime.prepare(workload_image)
    yield runtime
    runtime.remove_leftovers()
    left = runtime.leftovers()
    runtime.close()
    assert left == [], f"docker objects left behind by the tests: {left}"
