"""One facade over the runtimes, imported lazily (the docker and podman SDKs are slow)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from bench.errors import InputError

if TYPE_CHECKING:
    from bench.runtimes.base import Runtime

RUNTIME_CLASSES = {
    "bare": ("bench.runtimes.bare", "BareRuntime"),
    "docker": ("bench.runtimes.docker", "DockerRuntime"),
    "podman": ("bench.runtimes.podman", "PodmanRuntime"),
    "lxc": ("bench.runtimes.lxc", "LxcRuntime"),
}


def get_runtime(name: str) -> Runtime:
    """A new instance of the runtime called `name`."""
    if name not in RUNTIME_CLASSES:
        raise InputError(f"unknown runtime {name!r}; known: {', '.join(RUNTIME_CLASSES)}")
    module_name, class_name = RUNTIME_CLASSES[name]
    runtime: Runtime = getattr(importlib.import_module(module_name), class_name)()
    return runtime
