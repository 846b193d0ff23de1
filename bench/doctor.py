"""Host and runtime checks behind `bench doctor`."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from bench.cgroups.locate import cgroup_mounts
from bench.host import host_facts
from bench.runtimes import registry
from bench.runtimes.unsupported import UNSUPPORTED

if TYPE_CHECKING:
    from collections.abc import Iterable

    from bench.runtimes.base import OciAxisRuntime
    from bench.servers import ServerKind


@dataclass
class Check:
    """Whether something runs here: its version, or why not and the fix."""

    name: str
    available: bool
    version: str = ""
    reason: str = ""
    fix: str = ""


@dataclass
class OciCheck(Check):
    """One OCI runtime under one engine."""


@dataclass
class RuntimeCheck(Check):
    """One runtime; an engine with the oci_runtimes axis also checks each OCI runtime."""

    default_oci_runtime: str = ""
    # An engine with the oci_runtimes axis: each OCI runtime bench knows, whether it runs.
    oci_runtimes: list[OciCheck] = field(default_factory=list)


@dataclass
class ToolCheck:
    """A server or load generator a service workload needs; `fix` installs it."""

    name: str
    available: bool
    missing: list[str] = field(default_factory=list)
    fix: str = ""


@dataclass
class UnsupportedCheck:
    """A runtime bench does not offer on this kind of host, with the reason."""

    name: str
    reason: str


@dataclass
class DoctorReport:
    host: dict[str, Any]
    controllers: list[str]
    can_create_cgroups: bool
    cgroup_detail: str
    runtimes: list[RuntimeCheck] = field(default_factory=list)
    tools: list[ToolCheck] = field(default_factory=list)
    unsupported: list[UnsupportedCheck] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def controllers() -> list[str]:
    """Controllers bench can use: v1 mounts, or the v2 root's cgroup.controllers."""
    mounts = cgroup_mounts()
    names = sorted(name for name in mounts if name != "unified")
    if not names and "unified" in mounts:
        with contextlib.suppress(OSError):
            names = Path(mounts["unified"], "cgroup.controllers").read_text().split()
    return names


def check_runtime(name: str) -> RuntimeCheck:
    runtime = registry.get_runtime(name)
    try:
        availability = runtime.available()
        check = RuntimeCheck(
            name, availability.ok, reason=availability.reason, fix=availability.fix
        )
        if availability.ok:
            check.version = runtime.version()
            check.default_oci_runtime = runtime.default_oci_runtime() or ""
            if registry.entry(name).capabilities.oci_runtime_axis:
                check.oci_runtimes = check_oci_runtimes(cast("OciAxisRuntime", runtime))
        return check
    finally:
        runtime.close()


def check_oci_runtimes(engine: OciAxisRuntime) -> list[OciCheck]:
    checks = []
    for oci in registry.oci_runtime_names():
        availability = engine.oci_runtime_available(oci)
        check = OciCheck(oci, availability.ok, reason=availability.reason, fix=availability.fix)
        if availability.ok:
            check.version = engine.oci_runtime_version(oci)
        checks.append(check)
    return checks


def check_tools(kinds: Iterable[ServerKind] | None = None) -> list[ToolCheck]:
    """Each service's server: present, or the files missing and the package to install."""
    from bench.servers import SERVERS, missing_files

    checks = []
    for kind in SERVERS.values() if kinds is None else kinds:
        missing = [str(path) for path in missing_files(kind)]
        fix = f"apt-get install {kind.package}" if missing else ""
        checks.append(ToolCheck(f"{kind.name} server", not missing, missing, fix))
    return checks


def check_generators() -> list[ToolCheck]:
    """Each load generator bench drives on the host: on PATH, or the package to install."""
    from bench.loadgen import generator_programs

    checks = []
    for program, package in generator_programs().items():
        found = shutil.which(program) is not None
        fix = "" if found else f"apt-get install {package}"
        checks.append(ToolCheck(f"{program} load", found, [] if found else [program], fix))
    return checks


def run_doctor() -> DoctorReport:
    from bench.cgroups import can_create_cgroups

    ok, detail = can_create_cgroups()
    report = DoctorReport(
        host=host_facts().as_dict(),
        controllers=controllers(),
        can_create_cgroups=ok,
        cgroup_detail=detail,
    )
    report.runtimes = [check_runtime(name) for name in registry.names()]
    report.tools = check_tools() + check_generators()
    report.unsupported = [UnsupportedCheck(u.name, u.reason) for u in UNSUPPORTED]
    return report
