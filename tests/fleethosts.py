"""A small fleet of "hosts" for `bench fleet` tests: network namespaces on a private bridge.

Each host has its own network namespace (a veth pair into a bridge the lab creates), its own
hostname (UTS namespace) and its own sshd accepting root by a key the lab generates. They
share this machine's filesystem and cgroups, so bench really runs there, through SSH. All
of it (namespaces, bridge, sshd processes, keys) is removed by `close()`.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
SSHD = "/usr/sbin/sshd"
# Private addresses only these namespaces use (checked free before use).
SUBNETS = ("10.213.77", "10.213.78", "10.213.79")
SSHD_READY_S = 10.0


@dataclass
class LabHost:
    name: str
    hostname: str
    address: str
    netns: str
    host_veth: str
    sshd: subprocess.Popen[bytes] | None = None


@dataclass
class Lab:
    root: Path
    bridge: str
    subnet: str
    key: Path
    hosts: list[LabHost] = field(default_factory=list)

    def inventory(self, python: str, **extra: object) -> Path:
        """An Ansible inventory (YAML) naming every host, bench's install dir per host."""
        hosts = {
            h.name: {
                "ansible_host": h.address,
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(self.key),
                # The hosts share one filesystem: each installs into its own directory.
                "bench_home": str(self.root / f"home-{h.name}"),
                **extra,
            }
            for h in self.hosts
        }
        data = {"all": {"hosts": hosts, "vars": {"bench_python": python, "bench_setup": False}}}
        path = self.root / "inventory.yml"
        path.write_text(yaml.safe_dump(data))
        return path

    def host(self, name: str) -> LabHost:
        return next(h for h in self.hosts if h.name == name)

    def cut(self, name: str) -> None:
        """The host vanishes from the network (its link on the bridge goes down)."""
        _ip("link", "set", self.host(name).host_veth, "down")

    def restore(self, name: str) -> None:
        _ip("link", "set", self.host(name).host_veth, "up")

    def close(self) -> None:
        for h in self.hosts:
            if h.sshd is not None and h.sshd.poll() is None:
                os.killpg(h.sshd.pid, signal.SIGTERM)
                try:
                    h.sshd.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(h.sshd.pid, signal.SIGKILL)
                    h.sshd.wait(5)
            _ip("link", "del", h.host_veth, check=False)
            _ip("netns", "del", h.netns, check=False)
        _ip("link", "del", self.bridge, check=False)
        shutil.rmtree(self.root / "ssh", ignore_errors=True)


def _ip(*args: str, netns: str | None = None, check: bool = True) -> None:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    subprocess.run(argv, check=check, capture_output=True, timeout=10)


def _free_subnet() -> str:
    used = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    routes = subprocess.run(
        ["ip", "-4", "route", "show"], capture_output=True, text=True, check=True
    ).stdout
    for subnet in SUBNETS:
        if f"{subnet}." not in used and f"{subnet}." not in routes:
            return subnet
    raise RuntimeError(f"none of the lab subnets {SUBNETS} is free on this host")


def _enter(netns: str, hostname: str) -> None:
    """In the child before exec: its own UTS namespace and hostname, the lab's netns."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUTS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUTS)")
    socket.sethostname(hostname)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns(CLONE_NEWNET)")
    finally:
        os.close(fd)


def _wait_port(netns: str, address: str, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        done = subprocess.run(
            ["nsenter", f"--net=/run/netns/{netns}", "ss", "-ltnH", f"src {address}:22"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.stdout.strip():
            return
        time.sleep(0.1)
    raise RuntimeError(f"sshd in {netns} did not listen on {address}:22 in {deadline_s} s")


def make_lab(root: Path, count: int) -> Lab:
    """Bridge + `count` namespaces, each with sshd up; close() undoes all of it."""
    tag = uuid.uuid4().hex[:6]
    subnet = _free_subnet()
    ssh_dir = root / "ssh"
    ssh_dir.mkdir(parents=True)
    os.chmod(ssh_dir, 0o700)
    key = ssh_dir / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench-fleet-test", "-f", str(key)],
        check=True, capture_output=True,
    )  # fmt: skip
    authorized = ssh_dir / "authorized_keys"
    shutil.copy(key.with_suffix(".pub"), authorized)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    lab = Lab(root, f"bfl{tag}", subnet, key)
    try:
        _ip("link", "add", lab.bridge, "type", "bridge")
        _ip("addr", "add", f"{subnet}.1/24", "dev", lab.bridge)
        _ip("link", "set", lab.bridge, "up")
        for i in range(1, count + 1):
            name = f"h{i}"
            h = LabHost(name, f"fleet-{tag}-{name}", f"{subnet}.{10 + i}", f"bfl{tag}-{name}",
                        f"vf{tag}{i}")  # fmt: skip
            lab.hosts.append(h)
            _ip("netns", "add", h.netns)
            _ip("link", "add", h.host_veth, "type", "veth", "peer", "name", f"{h.host_veth}n")
            _ip("link", "set", f"{h.host_veth}n", "netns", h.netns)
            _ip("link", "set", h.host_veth, "master", lab.bridge, "up")
            _ip("link", "set", "lo", "up", netns=h.netns)
            _ip("link", "set", f"{h.host_veth}n", "name", "eth0", netns=h.netns)
            _ip("addr", "add", f"{h.address}/24", "dev", "eth0", netns=h.netns)
            _ip("link", "set", "eth0", "up", netns=h.netns)
            host_key = ssh_dir / f"host_{name}"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                           check=True, capture_output=True)  # fmt: skip
            config = ssh_dir / f"sshd_{name}.conf"
            config.write_text(
                f"ListenAddress {h.address}:22\nHostKey {host_key}\n"
                f"PidFile {ssh_dir / f'sshd_{name}.pid'}\n"
                f"AuthorizedKeysFile {authorized}\nPermitRootLogin prohibit-password\n"
                "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
                "StrictModes no\nSubsystem sftp internal-sftp\nLogLevel ERROR\n"
            )
            h.sshd = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                preexec_fn=lambda h=h: _enter(h.netns, h.hostname),  # type: ignore[misc]
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            _wait_port(h.netns, h.address, SSHD_READY_S)
    except BaseException:
        lab.close()
        raise
    return lab
