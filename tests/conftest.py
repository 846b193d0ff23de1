"""Shared test helpers: skip locally when a part is missing, fail in CI instead."""

from __future__ import annotations

import os

import pytest


def require(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (under CI=true) when `condition` is false.

    CI installs every runtime, so a missing one there is a broken setup, not a skip.
    """
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def require_root() -> None:
    require(os.geteuid() == 0, "needs root to create cgroups and run containers")
