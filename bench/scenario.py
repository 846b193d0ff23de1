"""Scenario models: what a scenario file may say, validated with pydantic."""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bench.runtimes import registry
from bench.scenario_values import (
    CPUSET_RE,
    HTTP_PATH,
    SAFE_NAME,
    USER_NAME,
    Float,
    matching,
    parse_size_bytes,
    unique_entries,
)
from bench.spec import Limits, NetworkMode

OciRuntime = Literal["runc", "crun", "runsc"]

# stress-ng stressors bench knows how to run and parse; kept explicit so a typo in a
# scenario is an error at load time rather than a failed trial an hour into a run.
STRESSORS = (
    "cpu", "vm", "matrix", "fork", "stream", "hdd", "iomix", "cache", "malloc",
    "switch", "pipe", "memcpy", "bigheap", "clone", "exec", "io", "sock", "udp",
)  # fmt: skip

# stress-ng options bench sets itself: results go to the trial's io dir, whatever the runtime.
RESERVED_OPTIONS = frozenset(
    {"timeout", "metrics", "metrics-brief", "yaml", "log-file", "temp-path", "job"}
)


def _registered_runtime(name: str) -> str:
    """A runtime name the registry knows (checked at load time, so plugins count)."""
    if name not in registry.names():
        raise ValueError(registry.unknown_message(name))
    return name


RuntimeName = Annotated[str, AfterValidator(_registered_runtime)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LimitsModel(StrictModel):
    cpus: Annotated[Float, Field(gt=0, le=1024)] | None = None
    cpuset: str | None = None
    memory: int | str | None = None
    pids: Annotated[int, Field(ge=1, le=4_194_304)] | None = None

    @field_validator("cpuset")
    @classmethod
    def _cpuset(cls, value: str | None) -> str | None:
        return matching(value, CPUSET_RE, "a cpuset list like '0' or '0-1,3'")

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: int | str | None) -> int | str | None:
        if value is not None:
            parse_size_bytes(value)
        return value

    def to_limits(self) -> Limits:
        memory = None if self.memory is None else parse_size_bytes(self.memory)
        return Limits(cpus=self.cpus, cpuset=self.cpuset, memory_bytes=memory, pids=self.pids)


OptionValue = int | float | str | bool


class LoadModel(StrictModel):
    """The load a service workload's client puts on its server (bench.loadgen.LoadSpec).

    Closed loop at `connections` unless `rate_per_s` lists offered rates: then one trial
    per rate, open loop (a throughput-latency sweep).
    """

    connections: Annotated[int, Field(ge=1, le=10_000)] = 16
    duration_s: Annotated[float, Field(ge=0.5, le=600)] = 5.0
    rate_per_s: Annotated[
        list[Annotated[float, Field(ge=1, le=10_000_000)]], AfterValidator(unique_entries)
    ] = Field(default_factory=list)
    # CPUs the client runs on; the default is every CPU the server does not use.
    client_cpus: str | None = None
    threads: Annotated[int, Field(ge=1, le=1024)] | None = None
    message_size_bytes: Annotated[int, Field(ge=14, le=65_000)] = 64
    # What the client runs where it has a choice (redis-benchmark -t get|set|..., pgbench's
    # built-in script); the generator's default when unset.
    operation: str | None = None
    # redis-benchmark's request count (its runs are bounded by count, not time).
    max_requests: Annotated[int, Field(ge=1, le=60_000_000)] | None = None
    # The HTTP path the client requests (e.g. one endpoint of a multi-tier app); the
    # server's own default when unset.
    path: str | None = None

    @field_validator("duration_s", mode="before")
    @classmethod
    def _duration_number(cls, value: object) -> object:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("rate_per_s", mode="before")
    @classmethod
    def _rates(cls, value: object) -> object:
        if isinstance(value, list):
            return [
                float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value
            ]
        return value

    @field_validator("client_cpus")
    @classmethod
    def _client_cpus(cls, value: str | None) -> str | None:
        return LimitsModel._cpuset(value)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return matching(value, HTTP_PATH, "an HTTP path like '/db' or '/json?n=1'")


class WorkloadModel(StrictModel):
    """A stress-ng stressor with its options, a plain command as an argv list, or a service:
    a server from bench's catalogue under the runtime, driven by a load from the host."""

    name: str
    stressor: str | None = None
    workers: Annotated[int, Field(ge=1, le=1024)] = 1
    duration_s: Annotated[Float, Field(gt=0, le=86_400)] = 5.0
    options: dict[str, OptionValue] = Field(default_factory=dict)
    command: list[str] | None = None
    service: str | None = None
    load: LoadModel | None = None
    # CPUs the server is pinned to (its cpuset); the client gets the others.
    server_cpus: str | None = None
    # The port the server listens on inside its runtime; the catalogue's default if unset.
    port: Annotated[int, Field(ge=1024, le=65_535)] | None = None
    # nginx-static: the size of the file served.
    body_bytes: Annotated[int, Field(ge=0, le=1 << 30)] = 1024
    # postgres: the scale of the pgbench tables initialised once per run (pgbench -i -s;
    # 100,000 accounts per unit).
    pgbench_scale: Annotated[int, Field(ge=1, le=100)] = 1

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not SAFE_NAME.match(value):
            raise ValueError("use letters, digits, '-', '_' and '.', at most 63 characters")
        return value

    @field_validator("stressor")
    @classmethod
    def _stressor(cls, value: str | None) -> str | None:
        if value is not None and value not in STRESSORS:
            raise ValueError(f"unknown stressor {value!r}; known: {', '.join(STRESSORS)}")
        return value

    @field_validator("options")
    @classmethod
    def _options(cls, value: dict[str, OptionValue]) -> dict[str, OptionValue]:
        for key, option in value.items():
            if not re.match(r"^[a-z][a-z0-9-]{0,40}$", key):
                raise ValueError(f"option {key!r} is not a stress-ng long option name")
            if key in RESERVED_OPTIONS:
                raise ValueError(f"option {key!r} is set by bench itself; remove it")
            if isinstance(option, str) and (option.startswith("-") or "\0" in option):
                raise ValueError(f"option {key!r} has a value that looks like a flag")
            if isinstance(option, float) and not math.isfinite(option):
                raise ValueError(f"option {key!r} must be a finite number")
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value or not value[0]:
                raise ValueError("command is an argv list with the program first")
            if any("\0" in arg for arg in value):
                raise ValueError("command arguments may not contain NUL bytes")
        return value

    @field_validator("service")
    @classmethod
    def _service(cls, value: str | None) -> str | None:
        from bench.stacks import service_names

        if value is not None and value not in service_names():
            raise ValueError(f"unknown service {value!r}; known: {', '.join(service_names())}")
        return value

    @field_validator("server_cpus")
    @classmethod
    def _server_cpus(cls, value: str | None) -> str | None:
        return LimitsModel._cpuset(value)

    @model_validator(mode="after")
    def _one_kind(self) -> WorkloadModel:
        kinds = [self.stressor, self.command, self.service]
        if sum(kind is not None for kind in kinds) != 1:
            raise ValueError("give exactly one of 'stressor', 'command' or 'service'")
        if self.service is None and (self.load or self.server_cpus or self.port):
            raise ValueError("load, server_cpus and port belong to a 'service' workload")
        if self.service is not None:
            from bench.service import check_service

            check_service(self)
        # stress-ng --timeout takes whole seconds: it truncates 1.5 to 1, and 0.5 to 0,
        # which means "run forever".
        if self.stressor is not None and self.duration_s != int(self.duration_s):
            raise ValueError("a stressor's duration_s is whole seconds (stress-ng --timeout)")
        if self.stressor is not None and self.duration_s < 1:
            raise ValueError("a stressor's duration_s is at least 1 (stress-ng --timeout)")
        return self


AggressorKind = Literal["cpu", "memory", "fork", "io", "cache"]
Placement = Literal["any", "shared", "separate"]
# What each kind of noisy neighbour runs (the Isolation Benchmark Suite's misbehaviours).
AGGRESSOR_STRESSORS: dict[str, str] = {
    "cpu": "cpu",
    "memory": "vm",
    "fork": "fork",
    "io": "hdd",
    "cache": "cache",
}


class AggressorModel(StrictModel):
    """A misbehaving neighbour started beside the victim, in its own container or cgroup."""

    name: str
    kind: AggressorKind
    workers: Annotated[int, Field(ge=1, le=1024)] = 1
    options: dict[str, OptionValue] = Field(default_factory=dict)
    limits: LimitsModel = Field(default_factory=LimitsModel)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return WorkloadModel._name(value)

    @field_validator("options")
    @classmethod
    def _options(cls, value: dict[str, OptionValue]) -> dict[str, OptionValue]:
        return WorkloadModel._options(value)

    @model_validator(mode="after")
    def _needs_limits(self) -> AggressorModel:
        # A fork bomb without a pids limit would take the host down, not measure isolation.
        if self.kind == "fork" and self.limits.pids is None:
            raise ValueError("a fork aggressor needs limits.pids (bench refuses an unbounded one)")
        if self.kind == "memory" and self.limits.memory is None:
            raise ValueError("a memory aggressor needs limits.memory: it allocates past it")
        return self

    def to_workload(self, duration_s: float) -> WorkloadModel:
        """The stress-ng workload this aggressor runs for `duration_s` seconds."""
        options: dict[str, OptionValue] = {}
        if self.kind == "memory":
            memory_bytes = self.limits.to_limits().memory_bytes or 0
            options["vm-bytes"] = f"{2 * memory_bytes // (1 << 20)}m"  # past its own limit
            options["vm-keep"] = True
        elif self.kind == "io":
            options["hdd-bytes"] = "64m"
        options.update(self.options)
        return WorkloadModel(
            name=self.name,
            stressor=AGGRESSOR_STRESSORS[self.kind],
            workers=self.workers,
            duration_s=float(max(1, math.ceil(duration_s))),
            options=options,
        )


class IsolationModel(StrictModel):
    """Every workload becomes a victim, run alone (baseline) and beside each aggressor."""

    aggressors: list[AggressorModel] = Field(min_length=1)
    # any: no pinning; shared: victim and aggressor both on CPU 0; separate: victim on
    # CPU 0, aggressor on CPU 1.
    placements: Annotated[list[Placement], AfterValidator(unique_entries)] = Field(
        default_factory=lambda: list[Placement](["any"]), min_length=1
    )

    @model_validator(mode="after")
    def _pinning(self) -> IsolationModel:
        names = [a.name for a in self.aggressors]
        if len(set(names)) != len(names):
            raise ValueError("aggressor names must be unique")
        pinned = any(p != "any" for p in self.placements)
        if pinned and any(a.limits.cpuset for a in self.aggressors):
            raise ValueError("placements shared/separate set the cpusets; drop limits.cpuset")
        return self


class QuickModel(StrictModel):
    """How `bench run --quick` scales the scenario down (same measurement, fewer seconds)."""

    repetitions: Annotated[int, Field(ge=1, le=1000)] = 3
    warmups: Annotated[int, Field(ge=0, le=100)] = 0
    duration_s: Annotated[int, Field(ge=1, le=86_400)] = 2
    # The offered rates of an open-loop service load in a quick run (default: the
    # scenario's own): one point of a sweep keeps CI short.
    rate_per_s: Annotated[
        list[Annotated[float, Field(ge=1, le=10_000_000)]], AfterValidator(unique_entries)
    ] = Field(default_factory=list)

    @field_validator("rate_per_s", mode="before")
    @classmethod
    def _rates(cls, value: object) -> object:
        return LoadModel._rates(value)


class Scenario(StrictModel):
    """A validated scenario file."""

    name: str
    description: str = ""
    runtimes: Annotated[list[RuntimeName], AfterValidator(unique_entries)] = Field(
        default_factory=lambda: list(registry.names()), min_length=1
    )
    oci_runtimes: Annotated[list[OciRuntime], AfterValidator(unique_entries)] = Field(
        default_factory=list
    )
    # The network paths to compare (docs/architecture.md, "Network paths"): each runtime
    # runs the listed modes it supports; bare metal runs on loopback as their baseline.
    network_modes: Annotated[list[NetworkMode], AfterValidator(unique_entries)] = Field(
        default_factory=lambda: list[NetworkMode](["none"]), min_length=1
    )
    repetitions: Annotated[int, Field(ge=1, le=1000)] = 3
    warmups: Annotated[int, Field(ge=0, le=100)] = 1
    sample_interval_ms: Annotated[Float, Field(ge=1, le=60_000)] = 100.0
    # How often the sampler reads every metric; ticks between read CPU usage, memory and
    # pids only (bench.sampler.DETAIL_INTERVAL_S says why). At or below sample_interval_ms:
    # every metric at every tick.
    sample_detail_interval_ms: Annotated[Float, Field(ge=1, le=3_600_000)] = 1000.0
    timeout_s: Annotated[Float, Field(gt=0, le=86_400)] = 120.0
    limits: LimitsModel = Field(default_factory=LimitsModel)
    workloads: list[WorkloadModel] = Field(min_length=1)
    # Copies of each workload started together in one step (overhead-footprint: the
    # runtime's memory per running container, as in Kata's density test).
    density: Annotated[int, Field(ge=1, le=500)] = 1
    isolation: IsolationModel | None = None
    quick: QuickModel = Field(default_factory=QuickModel)
    # Run every workload as this user (a name or a uid), under every runtime; None: as bench.
    user: Annotated[int, Field(ge=0, le=2**31 - 2)] | str | None = None

    @field_validator("user")
    @classmethod
    def _user(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, str) and not USER_NAME.match(value):
            raise ValueError(f"{value!r} is not a user name; give a name like 'nobody' or a uid")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return WorkloadModel._name(value)

    def quickened(self) -> Scenario:
        """The CI-sized version: fewer repetitions, shorter stressors, same measurement."""
        workloads = [
            _quick_workload(w, self.quick.duration_s, self.quick.rate_per_s) for w in self.workloads
        ]
        return self.model_copy(
            update={
                "repetitions": min(self.repetitions, self.quick.repetitions),
                "warmups": min(self.warmups, self.quick.warmups),
                "workloads": workloads,
            }
        )

    @field_validator("network_modes")
    @classmethod
    def _offered(cls, value: list[NetworkMode], info: ValidationInfo) -> list[NetworkMode]:
        # A runtime lacking one listed mode is skipped in it; a mode none offers is a mistake.
        runtimes = info.data.get("runtimes") or []
        for mode in value:
            offered = [r for r in runtimes if mode in registry.entry(r).capabilities.network_modes]
            if not offered:
                elsewhere = [
                    n
                    for n in registry.names()
                    if mode in registry.entry(n).capabilities.network_modes
                ]
                raise ValueError(
                    f"network mode {mode!r} is offered by none of this scenario's runtimes "
                    f"({', '.join(runtimes)}); list a runtime that offers it "
                    f"({', '.join(elsewhere) or 'none does'}) or drop the mode"
                )
        return value

    @model_validator(mode="after")
    def _unique_workloads(self) -> Scenario:
        names = [w.name for w in self.workloads]
        if len(set(names)) != len(names):
            raise ValueError("workload names must be unique")
        services = [w for w in self.workloads if w.service is not None]
        if services and (self.isolation is not None or self.density > 1):
            raise ValueError("service workloads do not combine with isolation or density yet")
        from bench.stacks import STACK_NETWORK_MODES, is_stack

        stacks = [w.name for w in services if w.service is not None and is_stack(w.service)]
        other = [m for m in self.network_modes if m not in STACK_NETWORK_MODES]
        if stacks and other:
            raise ValueError(
                f"workload {stacks[0]!r} is a multi-tier service, whose tiers reach each other "
                f"in network modes {' and '.join(STACK_NETWORK_MODES)} only; drop "
                f"{', '.join(other)} from network_modes (or run it in a scenario of its own)"
            )
        if "none" in self.network_modes and services:
            raise ValueError(
                "network mode 'none' gives a service no path to its client; list the paths "
                'to measure, e.g. network_modes = ["host", "bridge", "published"]'
            )
        return self


def _quick_workload(
    workload: WorkloadModel, duration_s: int, rates_per_s: list[float]
) -> WorkloadModel:
    """A stressor or a service's load shortened to at most `duration_s`, an open-loop load
    at `rates_per_s` instead of its own rates when given."""
    if workload.stressor is not None:
        return workload.model_copy(
            update={"duration_s": float(min(workload.duration_s, duration_s))}
        )
    if workload.load is not None:
        update: dict[str, object] = {"duration_s": float(min(workload.load.duration_s, duration_s))}
        if rates_per_s and workload.load.rate_per_s:
            update["rate_per_s"] = list(rates_per_s)
        load = workload.load.model_copy(update=update)
        return workload.model_copy(update={"load": load})
    return workload
