"""Real bench cgroups with a process in each, for the measuring-cost benchmarks (root only)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.cgroups import ManagedCgroup, can_create_cgroups, create_cgroup
from bench.spec import Limits

# Unique per benchmark process: other sessions may run bench on this host meanwhile.
PREFIX = f"bench-m{os.getpid()}-"
BUSY_ARGV = ("/bin/sh", "-c", "while :; do :; done")
SLEEP_ARGV = ("/bin/sleep", "3600")


@dataclass
class Populated:
    cgroup: ManagedCgroup
    proc: subprocess.Popen[bytes]


def require_cgroups() -> None:
    """Skip unless this process may create cgroups (root, a writable hierarchy)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create cgroups")
    ok, why = can_create_cgroups()
    if not ok:
        pytest.skip(f"cannot create cgroups here: {why}")


@contextlib.contextmanager
def populated_cgroups(count: int, argv: tuple[str, ...], tag: str) -> Iterator[list[Populated]]:
    """`count` fresh bench cgroups, each holding one process running `argv`; all removed after."""
    made: list[Populated] = []
    try:
        for i in range(count):
            cgroup = create_cgroup(f"{PREFIX}{tag}-{i}", Limits())
            try:
                proc = subprocess.Popen(
                    argv, preexec_fn=cgroup.join_current_process, stdout=subprocess.DEVNULL
                )
            except BaseException:
                cgroup.remove()
                raise
            made.append(Populated(cgroup, proc))
        yield made
    finally:
        for item in made:
            item.cgroup.kill_all()
            item.proc.wait()
            item.cgroup.remove()


def _busybox_tar() -> bytes:
    """A one-file rootfs: static busybox, enough for `sleep` (no registry is reachable)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add("/bin/busybox", arcname="bin/busybox")
        link = tarfile.TarInfo("bin/sleep")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
    return buf.getvalue()


@contextlib.contextmanager
def sleeping_containers(count: int, tag: str) -> Iterator[list[Any]]:
    """`count` running containers (busybox sleep, --network none, label bench=1); removed after.

    Skips without busybox-static or an answering dockerd.
    """
    if not Path("/bin/busybox").is_file():
        pytest.skip("busybox-static is not installed")
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        pytest.skip(f"no dockerd answers ({exc}); start it with scripts/start-services.sh")
    image = f"{PREFIX}busybox-{tag}:1"
    repository, _, version = image.partition(":")
    client.api.import_image_from_data(
        _busybox_tar(), repository=repository, tag=version, changes=["LABEL bench=1"]
    )
    containers: list[Any] = []
    try:
        for i in range(count):
            containers.append(
                client.containers.run(
                    image,
                    ["/bin/sleep", "3600"],
                    name=f"{PREFIX}{tag}-{i}",
                    detach=True,
                    network_mode="none",
                    labels={"bench": "1"},
                )
            )
        for container in containers:
            container.reload()
        yield containers
    finally:
        for container in containers:
            container.remove(force=True)
        client.images.remove(image, force=True)
        client.close()
