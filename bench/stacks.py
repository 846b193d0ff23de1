"""Multi-tier services: several servers of the catalogue, each its own container or cgroup.

A stack names its tiers in start order; each tier is a server kind (bench.servers) and the
tiers it connects to (`needs`), which start, and answer their probes, before it does. The
last tier is the front: the load from the host goes to it. A scenario names a stack as its
workload's `service`, like a single server; a single server is a stack of one tier whose
name is "". How a step runs them is in docs/architecture.md, "Multi-tier services".
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.errors import InputError

# Network modes in which the tiers reach each other: on the host's stack (127.0.0.1) or at
# their addresses on the run's network. A published front would need the back tiers'
# bridge addresses, which Handle.endpoint does not give in that mode.
STACK_NETWORK_MODES = ("host", "bridge")


@dataclass(frozen=True)
class Tier:
    """One tier of a stack: its name (trial ids, report rows), its server kind, and the
    tiers whose addresses it is given (ServerParams.peers; the first is its upstream)."""

    name: str
    server: str
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stack:
    """Tiers in start order; the front, which the client's load reaches, is the last unless
    `entry` names another (app-queue's client talks to the broker the services need first)."""

    name: str
    description: str
    tiers: tuple[Tier, ...]
    entry: str = ""

    @property
    def front(self) -> Tier:
        return next((t for t in self.tiers if t.name == self.entry), self.tiers[-1])


def _checked(stack: Stack) -> Stack:
    """A stack whose every tier needs only tiers named before it (its start order)."""
    seen: set[str] = set()
    for tier in stack.tiers:
        missing = [need for need in tier.needs if need not in seen]
        if missing or not tier.name or tier.name in seen:
            raise ValueError(f"stack {stack.name}: tier {tier.name!r} needs {missing} first")
        seen.add(tier.name)
    if stack.entry and stack.entry not in seen:
        raise ValueError(f"stack {stack.name}: entry {stack.entry!r} is none of its tiers")
    return stack


STACKS: dict[str, Stack] = {
    stack.name: _checked(stack)
    for stack in (
        Stack(
            "proxy-static",
            "nginx as a reverse proxy in front of nginx serving one static file",
            (Tier("static", "nginx-static"), Tier("front", "nginx-proxy", ("static",))),
        ),
        # app-queue (bench.queuesvc): the client publishes to the broker and receives there.
        Stack(
            "queue",
            "orders calls pricing over HTTP; both exchange messages through mosquitto",
            (
                Tier("broker", "mosquitto"),
                Tier("pricing", "queue-pricing", ("broker",)),
                Tier("orders", "queue-orders", ("broker", "pricing")),
            ),
            entry="broker",
        ),
        # app-multitier (bench.webappsvc): the load reaches nginx, the last tier, which
        # passes every request to the app over kept-alive HTTP/1.1.
        Stack(
            "webapp",
            "nginx as reverse proxy, a WSGI app under gunicorn, PostgreSQL, redis as cache",
            (
                Tier("db", "postgres"),
                Tier("cache", "redis"),
                Tier("app", "webapp", ("db", "cache")),
                Tier("front", "nginx-proxy", ("app",)),
            ),
        ),
    )
}


def is_stack(service: str) -> bool:
    return service in STACKS


def stack_of(service: str) -> Stack:
    """The stack a workload's `service` names; a single server as a stack of one tier."""
    found = STACKS.get(service)
    if found is not None:
        return found
    from bench.servers import SERVERS

    if service not in SERVERS:
        raise InputError(f"unknown service {service!r}; known: {', '.join(service_names())}")
    return Stack(service, "a single server", (Tier("", service),))


def service_names() -> list[str]:
    """Every name a scenario's `service` may take: the servers, then the stacks."""
    from bench.servers import SERVERS

    return [*SERVERS, *STACKS]
