"""The runtimes, reached through their registry (bench.runtimes.registry)."""

from __future__ import annotations

from bench.runtimes.registry import get_runtime, names

__all__ = ["get_runtime", "names"]
