"""The Linux bridge an LXC run's containers share in network mode bridge.

LXC has no network manager of its own (the distro's lxcbr0 is not there on every host),
so bench creates one bridge per run with a private /24 it checks is free, gives each
container a static address on it, and removes it in close(). Its name carries the owning
process's pid (bench-<pid><letter>, within the 15 characters of an interface name), so
`bench gc` removes only bridges whose run is gone. Where br_netfilter sends bridged
frames through iptables (docker sets FORWARD's policy to DROP), one ACCEPT rule for
traffic between the bridge's own ports lets the containers of a run reach each other;
its comment is the bridge's name, so it goes with the bridge.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import string
import subprocess
from dataclasses import dataclass, field

from bench.errors import BenchError
from bench.runtimes._network import owner_alive
from bench.spec import NAME_PREFIX

BRIDGE_RE = re.compile(rf"^{re.escape(NAME_PREFIX)}(\d+)([a-z])$")
# Private addresses bench picks a /24 from (RFC 1918), checked against the host's routes.
SUBNET_POOL = ipaddress.IPv4Network("10.213.0.0/16")
TOOL_TIMEOUT_S = 30.0


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, check=False, timeout=TOOL_TIMEOUT_S
    )


def _checked(*argv: str) -> str:
    proc = _run(*argv)
    if proc.returncode != 0:
        raise BenchError(f"`{shlex.join(argv)}` failed: {proc.stderr.strip() or proc.stdout}")
    return proc.stdout


@dataclass
class Bridge:
    """A bridge bench created, its /24 (the bridge holds .1) and the addresses in use."""

    name: str
    subnet: ipaddress.IPv4Network
    _used: set[ipaddress.IPv4Address] = field(default_factory=set, repr=False)

    @property
    def gateway(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(f"{next(self.subnet.hosts())}/{self.subnet.prefixlen}")

    def lease(self) -> ipaddress.IPv4Interface:
        """A free address for one container (with the prefix length, as LXC wants it)."""
        for host in list(self.subnet.hosts())[1:]:
            if host not in self._used:
                self._used.add(host)
                return ipaddress.IPv4Interface(f"{host}/{self.subnet.prefixlen}")
        raise BenchError(f"all addresses of {self.subnet} on bridge {self.name} are in use")

    def release(self, address: ipaddress.IPv4Interface) -> None:
        self._used.discard(address.ip)


def create_bridge() -> Bridge:
    """A new bridge with a free /24, up, with its FORWARD rule; nothing left on failure."""
    if shutil.which("ip") is None:
        raise BenchError("lxc bridge mode needs the `ip` tool: apt-get install iproute2")
    name = _free_name()
    _checked("ip", "link", "add", "name", name, "type", "bridge")
    try:
        subnet = _claim_subnet(name)
        _checked("ip", "link", "set", name, "up")
        if shutil.which("iptables") is not None:
            _checked("iptables", "-I", "FORWARD", *_forward_rule(name))
    except BaseException:
        remove_bridge(name)
        raise
    return Bridge(name, subnet)


def remove_bridge(name: str) -> None:
    """Delete the bridge's FORWARD rule(s) and the bridge; its veths died with containers."""
    for rule in _rules_of(name):
        _run("iptables", "-D", "FORWARD", *rule)
    if _link_exists(name):
        _checked("ip", "link", "delete", name, "type", "bridge")


def stale_bridges() -> list[str]:
    """Bridges (or their iptables rules) of bench runs whose process is gone."""
    names = set(_bridges()) | {name for name in _rule_owners()}
    return sorted(name for name in names if _stale(name))


def ports_of(bridge: str) -> list[str]:
    """Interfaces (veths) still attached to `bridge`."""
    proc = _run("ip", "-j", "link", "show", "master", bridge)
    return link_names(proc.stdout) if proc.returncode == 0 else []


def link_names(ip_json: str) -> list[str]:
    """Interface names in `ip -j link show ...` output.

    iproute2 6.1 prints an empty object for every link a filter leaves out: with no bridge
    (the cgroup v2 test VM) `ip -j link show type bridge` gave `[{},{},{},{},{}]`.
    """
    return [str(link["ifname"]) for link in json.loads(ip_json or "[]") if "ifname" in link]


def _stale(name: str) -> bool:
    match = BRIDGE_RE.match(name)
    return match is not None and not owner_alive(int(match.group(1)))


def _free_name() -> str:
    existing = set(_bridges())
    for letter in string.ascii_lowercase:
        name = f"{NAME_PREFIX}{os.getpid()}{letter}"
        if name not in existing and not _link_exists(name):
            return name
    raise BenchError(f"this process already has 26 bridges ({NAME_PREFIX}{os.getpid()}a-z)")


def _claim_subnet(name: str) -> ipaddress.IPv4Network:
    """Assign the first /24 of the pool that no route or address of the host overlaps.

    Starting at an offset from the pid makes two bench processes unlikely to race for the
    same /24; the check after assigning catches the rest.
    """
    candidates = list(SUBNET_POOL.subnets(new_prefix=24))
    start = os.getpid() % len(candidates)
    for subnet in candidates[start:] + candidates[:start]:
        if _users_of(subnet):
            continue
        gateway = f"{next(subnet.hosts())}/{subnet.prefixlen}"
        _checked("ip", "addr", "add", gateway, "dev", name)
        if _users_of(subnet) == {name}:
            return subnet
        _checked("ip", "addr", "del", gateway, "dev", name)  # another run took it meanwhile
    raise BenchError(f"no free /24 in {SUBNET_POOL} for an lxc bridge: every one is routed")


def _users_of(subnet: ipaddress.IPv4Network) -> set[str]:
    """The interfaces of every route (any table) or address of the host overlapping `subnet`
    ("?" for a route through no interface)."""
    users = set()
    routes = json.loads(_checked("ip", "-j", "-4", "route", "show", "table", "all") or "[]")
    for route in routes:
        destination = route.get("dst", "")
        if destination and destination != "default":
            with contextlib.suppress(ValueError):
                if subnet.overlaps(ipaddress.IPv4Network(destination, strict=False)):
                    users.add(str(route.get("dev", "?")))
    for link in json.loads(_checked("ip", "-j", "-4", "addr", "show") or "[]"):
        for info in link.get("addr_info", []):
            with contextlib.suppress(ValueError, KeyError):
                network = ipaddress.IPv4Network(
                    f"{info['local']}/{info['prefixlen']}", strict=False
                )
                if subnet.overlaps(network):
                    users.add(str(link["ifname"]))
    return users


def _bridges() -> list[str]:
    proc = _run("ip", "-j", "link", "show", "type", "bridge")
    if proc.returncode != 0:
        return []
    return [name for name in link_names(proc.stdout) if BRIDGE_RE.match(name)]


def _link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def _forward_rule(name: str) -> list[str]:
    return ["-i", name, "-o", name, "-m", "comment", "--comment", name, "-j", "ACCEPT"]


def _forward_rules() -> list[list[str]]:
    """FORWARD rules carrying a bench bridge's name as comment, as argv after `-A FORWARD`."""
    if shutil.which("iptables") is None:
        return []
    proc = _run("iptables", "-S", "FORWARD")
    rules = []
    for line in proc.stdout.splitlines():
        parts = shlex.split(line)
        if parts[:2] == ["-A", "FORWARD"] and "--comment" in parts:
            comment = parts[parts.index("--comment") + 1]
            if BRIDGE_RE.match(comment):
                rules.append(parts[2:])
    return rules


def _rules_of(name: str) -> list[list[str]]:
    return [rule for rule in _forward_rules() if rule[rule.index("--comment") + 1] == name]


def _rule_owners() -> list[str]:
    return [rule[rule.index("--comment") + 1] for rule in _forward_rules()]
