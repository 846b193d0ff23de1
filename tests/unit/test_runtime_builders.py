"""The pure builders of the container runtimes: what each would hand its engine, no root.

The same StartSpec must become the same limits, user, rlimits and lockdown under docker,
podman and LXC; the integration tests check the engines apply them, these check the
arguments themselves, including the ones no integration test reaches (v1 memsw on a
host without swap accounting, a user, a path with a space).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.runtimes._container import IO_MOUNT, engine_limit_options
from bench.runtimes.docker import DockerRuntime
from bench.runtimes.lxc import CAP_KEEP, container_config, limit_lines
from bench.runtimes.lxc_system import attach_argv, attached_command
from bench.runtimes.lxd import (
    CAPABILITIES,
    exec_argv,
    instance_config,
    metadata_tarball,
    raw_lxc,
)
from bench.runtimes.podman import _create_kwargs
from bench.spec import CPU_PERIOD_US, Limits, StartSpec

LIMITS = Limits(cpus=1.5, cpuset="0-1", memory_bytes=256 << 20, pids=64)
RLIMITS = (("nofile", 1024, 4096), ("nproc", 512, 512))


def spec(
    limits: Limits = LIMITS, user: tuple[int, int] | None = None, io_dir: str = "/srv/io"
) -> StartSpec:
    return StartSpec(
        name="bench-0123abcd-0000-a1b2c3",
        argv=("/bin/busybox", "true"),
        io_dir=Path(io_dir),
        limits=limits,
        rlimits=RLIMITS,
        labels=(("bench", "1"), ("bench.run", "run-1")),
        user=user,
    )


def test_engine_limits_give_quota_cpuset_memory_without_swap_and_pids() -> None:
    assert engine_limit_options(LIMITS) == {
        "cpu_period": CPU_PERIOD_US,
        "cpu_quota": 150_000,
        "cpuset_cpus": "0-1",
        "mem_limit": 256 << 20,
        "memswap_limit": 256 << 20,  # equal to mem_limit: no swap
        "pids_limit": 64,
    }
    assert engine_limit_options(Limits()) == {}


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_both_engines_get_the_same_limits_lockdown_and_io_dir(engine: str) -> None:
    options = _engine_options(engine, spec(user=(1000, 1001)))
    for key, value in engine_limit_options(LIMITS).items():
        assert options[key] == value, key
    assert options["name"] == "bench-0123abcd-0000-a1b2c3"
    assert options["labels"] == {"bench": "1", "bench.run": "run-1"}
    assert options["read_only"] is True
    assert options["cap_drop"] == ["ALL"]
    assert options["working_dir"] == IO_MOUNT
    assert options["user"] == "1000:1001"


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_no_limits_and_no_user_add_no_option(engine: str) -> None:
    options = _engine_options(engine, spec(limits=Limits()))
    assert not set(engine_limit_options(LIMITS)) & set(options)
    assert "user" not in options


def test_docker_options_bind_the_io_dir_and_pass_rlimits_and_oci_runtime() -> None:
    options = DockerRuntime()._run_options(spec())
    assert options["volumes"] == {"/srv/io": {"bind": IO_MOUNT, "mode": "rw"}}
    assert [(u["Name"], u["Soft"], u["Hard"]) for u in options["ulimits"]] == list(RLIMITS)
    assert options["security_opt"] == ["no-new-privileges"]
    assert "runtime" not in options
    crun = StartSpec(name="bench-x", argv=("true",), io_dir=Path("/srv/io"), oci_runtime="crun")
    assert DockerRuntime()._run_options(crun)["runtime"] == "crun"


def test_podman_options_bind_the_io_dir_and_pass_rlimits() -> None:
    options = _create_kwargs(spec())
    assert options["mounts"] == [{"type": "bind", "source": "/srv/io", "target": IO_MOUNT}]
    assert options["ulimits"] == [
        {"Name": name, "Soft": soft, "Hard": hard} for name, soft, hard in RLIMITS
    ]
    assert options["no_new_privileges"] is True


def _engine_options(engine: str, start: StartSpec) -> dict[str, object]:
    if engine == "docker":
        return DockerRuntime()._run_options(start)
    return _create_kwargs(start)


def test_lxc_v2_limit_lines() -> None:
    assert limit_lines(spec(), "v2", memsw_supported=False) == [
        f"lxc.cgroup2.cpu.max = 150000 {CPU_PERIOD_US}",
        "lxc.cgroup2.cpuset.cpus = 0-1",
        f"lxc.cgroup2.memory.max = {256 << 20}",
        "lxc.cgroup2.memory.swap.max = 0",
        "lxc.cgroup2.pids.max = 64",
    ]


@pytest.mark.parametrize("version", ["v1", "hybrid"])
def test_lxc_v1_limit_lines_set_memory_before_memsw(version: str) -> None:
    lines = limit_lines(spec(), version, memsw_supported=True)
    assert lines == [
        f"lxc.cgroup.cpu.cfs_period_us = {CPU_PERIOD_US}",
        "lxc.cgroup.cpu.cfs_quota_us = 150000",
        "lxc.cgroup.cpuset.cpus = 0-1",
        f"lxc.cgroup.memory.limit_in_bytes = {256 << 20}",
        f"lxc.cgroup.memory.memsw.limit_in_bytes = {256 << 20}",
        "lxc.cgroup.pids.max = 64",
    ]
    # Without swap accounting the memsw file does not exist: writing it would fail.
    without = limit_lines(spec(), version, memsw_supported=False)
    assert without == [line for line in lines if "memsw" not in line]
    assert limit_lines(spec(limits=Limits()), version, memsw_supported=True) == []


def test_lxc_config_locks_the_container_down_and_runs_as_the_user() -> None:
    config = container_config(
        spec(user=(1000, 1001), io_dir="/srv/my io"), Path("/r/rootfs"), "v2", memsw=False
    )
    lines = config.splitlines()
    assert config.endswith("\n")
    assert "lxc.uts.name = bench-0123abcd-0000-a1b2c3" in lines
    assert "lxc.rootfs.path = dir:/r/rootfs" in lines
    assert "lxc.rootfs.options = ro" in lines
    assert "lxc.no_new_privs = 1" in lines
    assert f"lxc.cap.keep = {CAP_KEEP}" in lines
    assert [line for line in lines if line.startswith("lxc.init.") and "id" in line] == [
        "lxc.init.uid = 1000",
        "lxc.init.gid = 1001",
    ]
    # fstab(5) syntax: the space in the io dir is \040, or LXC would split the entry there.
    mount = next(line for line in lines if line.startswith("lxc.mount.entry"))
    assert mount.split(" = ", 1)[1].split(" ")[:2] == ["/srv/my\\040io", IO_MOUNT.lstrip("/")]
    assert [line for line in lines if line.startswith("lxc.prlimit.")] == [
        "lxc.prlimit.nofile = 1024:4096",
        "lxc.prlimit.nproc = 512:512",
    ]
    assert lines[-len(limit_lines(spec(), "v2", False)) :] == limit_lines(spec(), "v2", False)


def test_lxc_config_without_user_sets_no_init_ids() -> None:
    config = container_config(spec(), Path("/r/rootfs"), "v2", memsw=False)
    assert "lxc.init.uid" not in config and "lxc.init.gid" not in config


def test_lxc_system_config_is_lxcs_with_a_root_init_and_the_user_on_lxc_attach() -> None:
    """lxc-system shares lxc's config (limits, hardening); only the init's user differs."""
    with_user = spec(user=(1000, 1001))
    app = container_config(with_user, Path("/r/rootfs"), "v1", memsw=True)
    system = container_config(with_user, Path("/r/rootfs"), "v1", memsw=True, init_as_user=False)
    assert system.splitlines() == [
        line for line in app.splitlines() if not line.startswith(("lxc.init.uid", "lxc.init.gid"))
    ]
    assert system != app
    argv = attach_argv(Path("/var/lib/x"), with_user.name, with_user.user)
    assert argv == [
        "lxc-attach", "-P", "/var/lib/x", "-n", with_user.name, "--clear-env",
        "-u", "1000", "-g", "1001",
    ]  # fmt: skip
    assert "-u" not in attach_argv(Path("/var/lib/x"), with_user.name, None)


def test_lxc_system_attached_command_sets_rlimits_from_arguments() -> None:
    """The script's text holds no value: limits and argv arrive as arguments."""
    import resource

    limits = [(resource.RLIMIT_NOFILE, 1024, 4096), (resource.RLIMIT_NPROC, 512, 512)]
    argv = attached_command(["/bin/x", "a; rm -rf /"], limits)
    assert argv[:3] == ["/bin/busybox", "sh", "-c"]
    script = argv[3]
    assert not any(str(n) in script for n in (1024, 4096, 512))
    assert argv[4:] == ["bench-cd", "4096", "1024", "512", "512", "/bin/x", "a; rm -rf /"]
    assert script.endswith('shift 4 && cd /bench && exec "$@"')
    assert attached_command(["/bin/x"], [])[3] == 'shift 0 && cd /bench && exec "$@"'


@pytest.mark.parametrize("field", ["name", "cpuset", "rootfs"])
def test_lxc_config_refuses_a_newline_that_would_inject_a_key(field: str) -> None:
    hostile = "x\nlxc.apparmor.profile = unconfined"
    start = spec()
    rootfs = Path("/r/rootfs")
    if field == "name":
        start = StartSpec(name=hostile, argv=("true",), io_dir=Path("/srv/io"))
    elif field == "cpuset":
        start = spec(limits=Limits(cpuset=hostile))
    else:
        rootfs = Path(hostile)
    with pytest.raises(BenchError, match="newline"):
        container_config(start, rootfs, "v2", memsw=False)


def test_lxd_raw_lxc_has_lxcs_limits_and_lockdown_without_the_keys_lxd_refuses() -> None:
    """The shared limits as lxc's own lines; every capability dropped by name (LXD refuses
    lxc.cap.keep beside its own lxc.cap.drop) and no lxc.net.* line (LXD refuses those)."""
    for version, memsw in (("v1", True), ("v1", False), ("v2", False)):
        raw = raw_lxc(spec(), version, memsw)
        lines = raw.splitlines()
        assert [line for line in lines if line.startswith("lxc.cgroup")] == limit_lines(
            spec(), version, memsw
        )
        assert "lxc.init.cmd = /bin/busybox init" in lines
        assert "lxc.rootfs.options = ro" in lines and "lxc.no_new_privs = 1" in lines
        (drop,) = [line for line in lines if line.startswith("lxc.cap.drop = ")]
        assert set(drop.split(" = ")[1].split()) <= set(CAPABILITIES)
        assert "sys_admin" in drop and "chown" in drop
        assert not any(line.startswith(("lxc.net.", "lxc.cap.keep")) for line in lines)
        (hook,) = [line for line in lines if line.startswith("lxc.hook.start-host")]
        assert "--target $LXC_PID --net" in hook and hook.endswith("link set lo up")
    assert len(CAPABILITIES) == len(set(CAPABILITIES))


def test_lxd_instance_is_privileged_without_profile_or_nic_and_binds_the_io_dir() -> None:
    config = instance_config(spec(io_dir="/srv/io dir"), "lxc.x = 1\n", pool="p")
    assert config["config"] == {"security.privileged": "true", "raw.lxc": "lxc.x = 1\n"}
    assert config["devices"] == {
        "root": {"type": "disk", "path": "/", "pool": "p"},
        "bench": {"type": "disk", "source": "/srv/io dir", "path": IO_MOUNT},
    }
    bridged = StartSpec(name="bench-x", argv=("true",), io_dir=Path("/srv/io"), network="bridge")
    with pytest.raises(BenchError, match="bridge"):
        instance_config(bridged, "")


def test_lxd_exec_sets_the_user_and_no_terminal() -> None:
    assert exec_argv("bench-x", (1000, 1001)) == [
        "lxc", "exec", "bench-x", "--mode", "non-interactive", "--user", "1000", "--group", "1001",
    ]  # fmt: skip
    assert exec_argv("bench-x", None) == ["lxc", "exec", "bench-x", "--mode", "non-interactive"]


def test_lxd_image_metadata_is_the_same_bytes_every_time() -> None:
    import io
    import tarfile

    assert metadata_tarball() == metadata_tarball()
    with tarfile.open(fileobj=io.BytesIO(metadata_tarball())) as tar:
        (member,) = tar.getmembers()
        extracted = tar.extractfile(member)
        assert extracted is not None
        text = extracted.read().decode()
    assert member.name == "metadata.yaml" and member.mtime == 0
    # LXD refuses an image without a creation date, and reads 0 as none.
    date = int(text.split("creation_date: ")[1].split()[0])
    assert date > 0 and "architecture: " in text
