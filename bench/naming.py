"""Names of the containers and cgroups bench creates: findable per run, unique per trial."""

from __future__ import annotations

import hashlib

from bench.spec import NAME_PREFIX


def object_prefix(run_id: str) -> str:
    """The name prefix of every container and cgroup of a run (what `bench gc` looks for)."""
    return f"{NAME_PREFIX}{_digest(run_id, 8)}-"


def object_name(run_id: str, trial_id: str) -> str:
    """Container/cgroup name: unique per run and trial, short, and prefixed for gc."""
    return f"{object_prefix(run_id)}{trial_id[:4]}-{_digest(trial_id, 6)}"


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]
