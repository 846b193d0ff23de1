"""Scenario files: pydantic models and loading (every error carries file:line)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bench.spec import Limits

RUNTIME_NAMES = ("bare", "docker", "podman", "lxc")
RuntimeName = Literal["bare", "docker", "podman", "lxc"]
OciRuntime = Literal["runc", "crun"]

# stress-ng stressors bench knows how to run and parse; kept explicit so a typo in a
# scenario is an error at load time rather than a failed trial an hour into a run.
STRESSORS = (
    "cpu", "vm", "matrix", "fork", "stream", "hdd", "iomix", "cache", "malloc",
    "switch", "pipe", "memcpy", "bigheap", "clone", "exec", "io", "sock", "udp",
)  # fmt: skip

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
SIZE_RE = re.compile(r"^(\d+)\s*([kmgt]?)i?b?$", re.IGNORECASE)
SIZE_FACTORS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
CPUSET_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def parse_size_bytes(value: int | str) -> int:
    """Parse 268435456, "256m", "256MiB" or "1g" to bytes."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a string like '256m'")
    if isinstance(value, int):
        size = value
    else:
        match = SIZE_RE.match(value.strip())
        if not match:
            raise ValueError(f"{value!r} is not a size; write bytes or e.g. '256m', '1g'")
        size = int(match.group(1)) * SIZE_FACTORS[match.group(2).lower()]
    if size <= 0:
        raise ValueError("a size must be positive")
    return size


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LimitsModel(StrictModel):
    cpus: Annotated[float, Field(gt=0, le=1024)] | None = None
    cpuset: str | None = None
    memory: int | str | None = None
    pids: Annotated[int, Field(ge=1, le=4_194_304)] | None = None

    @field_validator("cpus", mode="before")
    @classmethod
    def _cpus_number(cls, value: object) -> object:
        # TOML writes 1 and 1.0 differently; both mean one CPU.
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("cpuset")
    @classmethod
    def _cpuset(cls, value: str | None) -> str | None:
        if value is not None and not CPUSET_RE.match(value):
            raise ValueError(f"{value!r} is not a cpuset list like '0' or '0-1,3'")
        return value

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


class WorkloadModel(StrictModel):
    """A stress-ng stressor with its options, or a plain command as an argv list."""

    name: str
    stressor: str | None = None
    workers: Annotated[int, Field(ge=1, le=1024)] = 1
    duration_s: Annotated[float, Field(gt=0, le=86_400)] = 5.0
    options: dict[str, OptionValue] = Field(default_factory=dict)
    command: list[str] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not SAFE_NAME.match(value):
            raise ValueError("use letters, digits, '-', '_' and '.', at most 63 characters")
        return value

    @field_validator("duration_s", mode="before")
    @classmethod
    def _duration_number(cls, value: object) -> object:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

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
            if isinstance(option, str) and (option.startswith("-") or "\0" in option):
                raise ValueError(f"option {key!r} has a value that looks like a flag")
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

    @model_validator(mode="after")
    def _one_kind(self) -> WorkloadModel:
        if (self.stressor is None) == (self.command is None):
            raise ValueError("give exactly one of 'stressor' or 'command'")
        return self


class Scenario(StrictModel):
    """A validated scenario file."""

    name: str
    description: str = ""
    runtimes: list[RuntimeName] = Field(default_factory=lambda: list(RUNTIME_NAMES), min_length=1)
    oci_runtimes: list[OciRuntime] = Field(default_factory=list)
    repetitions: Annotated[int, Field(ge=1, le=1000)] = 3
    warmups: Annotated[int, Field(ge=0, le=100)] = 1
    sample_interval_ms: Annotated[float, Field(ge=1, le=60_000)] = 100.0
    timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 120.0
    limits: LimitsModel = Field(default_factory=LimitsModel)
    workloads: list[WorkloadModel] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return WorkloadModel._name(value)

    @field_validator("sample_interval_ms", "timeout_s", mode="before")
    @classmethod
    def _float(cls, value: object) -> object:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("runtimes", "oci_runtimes")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("list each entry once")
        return value

    @model_validator(mode="after")
    def _unique_workloads(self) -> Scenario:
        names = [w.name for w in self.workloads]
        if len(set(names)) != len(names):
            raise ValueError("workload names must be unique")
        return self
