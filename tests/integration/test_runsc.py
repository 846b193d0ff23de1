"""gVisor sandboxes no engine knows any more: `bench gc` finds bench's and deletes them."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from bench.runtimes import _oci as oci
from bench.runtimes._container import WRAPPER_ARGV0
from tests.helpers import require, require_root

if TYPE_CHECKING:
    from bench.image import WorkloadImage
    from bench.runtimes.base import Runtime

pytestmark = [pytest.mark.integration]


@pytest.fixture(params=["podman", "docker"])
def engine(request: pytest.FixtureRequest) -> Runtime:
    """Each engine whose runsc state root bench searches, ready to list and remove."""
    runtime: Runtime = request.getfixturevalue(f"{request.param}_runtime")
    return runtime


@pytest.fixture
def orphan(engine: Runtime, workload_image: WorkloadImage, tmp_path: Path) -> Iterator[oci.Sandbox]:
    """A sandbox of bench's wrapper started by runsc itself in the engine's state root, as
    a start that failed half-way leaves it: the engine has no container for it."""
    require_root()
    require(shutil.which("runsc") is not None, "runsc is not installed (apt-get install runsc)")
    bundle = tmp_path / "bundle"
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    with tarfile.open(workload_image.tarball) as archive:
        archive.extractall(rootfs, filter="tar")
    subprocess.run(["runsc", "spec", "--bundle", str(bundle)], check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/busybox", "sh", "-c", "exec sleep 60", WRAPPER_ARGV0]
    spec["root"] = {"path": str(rootfs), "readonly": True}
    (bundle / "config.json").write_text(json.dumps(spec))
    root = oci.RUNSC_STATE_ROOTS[engine.name]
    root.mkdir(parents=True, exist_ok=True)
    sandbox = oci.Sandbox(root, uuid.uuid4().hex * 2)
    flags = [f"--{flag}" for flag in oci.known("runsc").flags]
    argv = ["runsc", "--root", str(root), *flags, "run", "--detach", "--bundle", str(bundle)]
    subprocess.run([*argv, sandbox.container_id], check=True, timeout=60)
    yield sandbox
    oci.remove_sandbox(sandbox)


def test_an_orphan_sandbox_is_a_leftover_and_gc_deletes_it(
    engine: Runtime, orphan: oci.Sandbox, workload_image: WorkloadImage
) -> None:
    assert str(orphan) in engine.leftovers()
    assert _sandbox_processes(orphan.container_id), "the orphan's sandbox does not run"
    assert engine.remove_leftovers() >= 1
    engine.prepare(workload_image)  # gc removed the image too; later tests share the engine
    assert str(orphan) not in engine.leftovers()
    listed = subprocess.run(
        ["runsc", "--root", str(orphan.root), "list", "--quiet"], capture_output=True, text=True
    )
    assert orphan.container_id not in listed.stdout.split()
    assert _sandbox_processes(orphan.container_id) == []


def test_a_sandbox_not_of_bench_is_left_alone(engine: Runtime, orphan: oci.Sandbox) -> None:
    """Only bench's wrapper marks a sandbox as bench's: another one is not touched."""
    bundle = json.loads(
        subprocess.run(
            ["runsc", "--root", str(orphan.root), "list", "--format", "json"],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    (entry,) = [e for e in bundle if e["id"] == orphan.container_id]
    config = Path(entry["bundle"]) / "config.json"
    spec = json.loads(config.read_text())
    spec["process"]["args"] = spec["process"]["args"][:-1]
    config.write_text(json.dumps(spec))
    assert str(orphan) not in engine.leftovers()


def _sandbox_processes(container_id: str) -> list[int]:
    import psutil

    return sorted(
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any(container_id in arg for arg in p.info["cmdline"] or [])
    )
