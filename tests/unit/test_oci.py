"""The OCI runtimes of the scenario axis: flags, docker registration, daemon.json merge."""

from __future__ import annotations

import importlib
import json
import shutil
import typing
from pathlib import Path

import pytest

from bench.runtimes import _oci as oci
from bench.runtimes import registry
from bench.scenario import OciRuntime


def test_the_scenario_axis_accepts_exactly_the_known_oci_runtimes() -> None:
    assert set(typing.get_args(OciRuntime)) == set(registry.oci_runtime_names())


def test_podman_gets_runsc_with_every_flag_and_runc_with_none() -> None:
    assert oci.podman_global_args("runc") == ["--runtime", "runc"]
    args = oci.podman_global_args("runsc")
    flags = args[3::2]
    assert args[:2] == ["--runtime", "runsc"] and set(args[2::2]) == {"--runtime-flag"}
    assert "network=none" in flags and "host-fifo=open" in flags
    assert f"platform={oci.RUNSC_PLATFORM}" in flags


def test_runsc_refuses_every_network_mode_but_none() -> None:
    assert oci.check_network("runsc", "none", "c") is None
    assert oci.check_network("runc", "bridge", "c") is None
    assert oci.check_network(None, "host", "c") is None
    refused = oci.check_network("runsc", "bridge", "bench-x")
    assert refused is not None and "bench-x" in refused and "'none'" in refused


def test_docker_registration_names_what_is_missing_and_the_fix() -> None:
    wanted = oci.known("runsc").docker_runtime_args
    assert oci.docker_registration("runc", {"runc": {"path": "runc"}}).ok
    absent = oci.docker_registration("runsc", {"runc": {"path": "runc"}})
    assert not absent.ok and "no runtime named runsc" in absent.reason
    assert "start-services.sh" in absent.fix and "SIGHUP" in absent.fix
    partial = oci.docker_registration("runsc", {"runsc": {"runtimeArgs": wanted[:1]}})
    assert not partial.ok and wanted[1] in partial.reason and wanted[0] not in partial.reason
    assert oci.docker_registration("runsc", {"runsc": {"runtimeArgs": ["--debug", *wanted]}}).ok


@pytest.mark.skipif(shutil.which("runsc") is None, reason="runsc is not installed")
def test_daemon_json_merge_keeps_other_keys_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"log-level": "warn", "runtimes": {"other": {"path": "/x"}}}))
    assert oci.main([str(path)]) == 0
    config = json.loads(path.read_text())
    assert config["log-level"] == "warn" and config["runtimes"]["other"] == {"path": "/x"}
    assert config["runtimes"]["runsc"]["runtimeArgs"] == oci.known("runsc").docker_runtime_args
    assert "runc" not in config["runtimes"]  # dockerd's own
    assert not oci.merge_docker_config(config)
    empty = tmp_path / "new" / "daemon.json"
    oci.main([str(empty)])
    assert "runsc" in json.loads(empty.read_text())["runtimes"]


def test_crun_is_refused_on_a_hybrid_host_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    # The package re-exports a function called locate: take the module itself.
    locate = importlib.import_module("bench.cgroups.locate")
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(locate, "host_cgroup_version", lambda: "hybrid")
    refused = oci.available("crun")
    assert not refused.ok and "hybrid" in refused.reason and refused.fix
    assert oci.available("runsc").ok
    monkeypatch.setattr(locate, "host_cgroup_version", lambda: "v2")
    assert oci.available("crun").ok
    monkeypatch.setattr(shutil, "which", lambda name: None)
    missing = oci.available("runsc")
    assert not missing.ok and missing.fix == "apt-get install runsc"
