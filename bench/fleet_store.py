"""A fleet result: one folder holding every host's run directory plus fleet.json.

Layout: `<fleet dir>/fleet.json` (hosts, each host's status and why, the scenario's sha256,
bench's version) and `<fleet dir>/hosts/<host>/`, an ordinary result directory per host.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from bench.errors import InputError

FLEET_MANIFEST = "fleet.json"
HOSTS_DIR = "hosts"

HostStatus = Literal[
    "pending", "running", "complete", "incomplete", "failed", "unreachable", "timeout",
    "interrupted",
]  # fmt: skip
FleetStatus = Literal["running", "complete", "incomplete", "interrupted"]


@dataclass
class HostEntry:
    """One host of the fleet: how its run ended and why (never a secret: messages only)."""

    status: HostStatus = "pending"
    reason: str = ""
    run_id: str = ""
    hostname: str = ""
    started_at: str = ""
    ended_at: str = ""
    attempts: int = 0


@dataclass
class FleetManifest:
    """fleet.json: what ran on which hosts, with which bench, and how each host ended."""

    fleet_id: str
    status: FleetStatus
    scenario_name: str
    scenario_sha256: str
    quick: bool
    runtimes: list[str]
    bench_version: str
    bench_source_sha256: str
    git_commit: str | None
    inventory: str
    limit: str
    started_at: str
    ended_at: str = ""
    hosts: dict[str, HostEntry] = field(default_factory=dict)

    def save(self, fleet_dir: Path) -> None:
        """Rewrite fleet.json atomically (a crash leaves the previous version)."""
        fleet_dir.mkdir(parents=True, exist_ok=True)
        tmp = fleet_dir / f".{FLEET_MANIFEST}.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, fleet_dir / FLEET_MANIFEST)

    @classmethod
    def load(cls, fleet_dir: Path) -> FleetManifest:
        path = fleet_dir / FLEET_MANIFEST
        try:
            data = json.loads(path.read_text())
            hosts = {name: HostEntry(**entry) for name, entry in data.pop("hosts").items()}
            return cls(**data, hosts=hosts)
        except FileNotFoundError:
            raise InputError(
                f"{fleet_dir} is not a fleet result: {FLEET_MANIFEST} is missing"
            ) from None
        except (ValueError, TypeError, KeyError) as exc:
            raise InputError(f"{path} is damaged or from another bench version: {exc}") from None

    def unfinished(self) -> list[str]:
        return [name for name, entry in self.hosts.items() if entry.status != "complete"]


def is_fleet_dir(path: Path) -> bool:
    return (path / FLEET_MANIFEST).is_file()


def host_dir(fleet_dir: Path, host: str) -> Path:
    return fleet_dir / HOSTS_DIR / host


def host_runs(fleet_dir: Path) -> list[tuple[str, Path]]:
    """(host, run directory) of every host that brought a run back, in fleet.json order."""
    manifest = FleetManifest.load(fleet_dir)
    found = []
    for name in manifest.hosts:
        run_dir = host_dir(fleet_dir, name)
        if (run_dir / "manifest.json").is_file():
            found.append((name, run_dir))
    return found


def expand_runs(paths: list[Path]) -> list[Path]:
    """Run directories, with every fleet result replaced by its hosts' runs (in its order)."""
    expanded: list[Path] = []
    for path in paths:
        if is_fleet_dir(path):
            runs = host_runs(path)
            if not runs:
                raise InputError(f"{path}: no host of this fleet brought a run back")
            expanded += [run_dir for _host, run_dir in runs]
        else:
            expanded.append(path)
    return expanded
