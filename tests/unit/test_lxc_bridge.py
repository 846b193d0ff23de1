"""Parsing iproute2's JSON output for the LXC bridge (captured from this host and the v2 VM)."""

from __future__ import annotations

from bench.runtimes._lxc_bridge import link_names

# `ip -j link show type bridge` on this host (abridged) and in the cgroup v2 test VM, which
# has no bridge: iproute2 6.1 prints an empty object for each link the filter leaves out.
WITH_BRIDGE = '[{"ifindex":5,"ifname":"docker0","flags":["UP"],"mtu":1500}]'
NO_BRIDGE = "[{},{},{},{},{}]\n"


def test_link_names() -> None:
    assert link_names(WITH_BRIDGE) == ["docker0"]
    assert link_names(NO_BRIDGE) == []
    assert link_names("") == []
