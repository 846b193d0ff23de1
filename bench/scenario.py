"""Scenario files: pydantic models and loading (every error carries file:line)."""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bench.errors import InputError
from bench.spec import Limits

RuntimeName = Literal["bare", "docker", "podman", "lxc"]
RUNTIME_NAMES: tuple[RuntimeName, ...] = ("bare", "docker", "podman", "lxc")
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
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
CPUSET_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
# stress-ng options bench sets itself: results go to the trial's io dir, whatever the runtime.
RESERVED_OPTIONS = frozenset(
    {"timeout", "metrics", "metrics-brief", "yaml", "log-file", "temp-path", "job"}
)


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


T = TypeVar("T")


def unique_entries(values: list[T]) -> list[T]:
    if len(set(values)) != len(values):
        raise ValueError("list each entry once")
    return values


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

    @model_validator(mode="after")
    def _one_kind(self) -> WorkloadModel:
        if (self.stressor is None) == (self.command is None):
            raise ValueError("give exactly one of 'stressor' or 'command'")
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


class Scenario(StrictModel):
    """A validated scenario file."""

    name: str
    description: str = ""
    runtimes: Annotated[list[RuntimeName], AfterValidator(unique_entries)] = Field(
        default_factory=lambda: list(RUNTIME_NAMES), min_length=1
    )
    oci_runtimes: Annotated[list[OciRuntime], AfterValidator(unique_entries)] = Field(
        default_factory=list
    )
    repetitions: Annotated[int, Field(ge=1, le=1000)] = 3
    warmups: Annotated[int, Field(ge=0, le=100)] = 1
    sample_interval_ms: Annotated[float, Field(ge=1, le=60_000)] = 100.0
    timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 120.0
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
            w.model_copy(update={"duration_s": float(min(w.duration_s, self.quick.duration_s))})
            if w.stressor is not None
            else w
            for w in self.workloads
        ]
        return self.model_copy(
            update={
                "repetitions": min(self.repetitions, self.quick.repetitions),
                "warmups": min(self.warmups, self.quick.warmups),
                "workloads": workloads,
            }
        )

    @field_validator("sample_interval_ms", "timeout_s", mode="before")
    @classmethod
    def _float(cls, value: object) -> object:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _unique_workloads(self) -> Scenario:
        names = [w.name for w in self.workloads]
        if len(set(names)) != len(names):
            raise ValueError("workload names must be unique")
        return self


# --- loading: TOML text -> Scenario, every error as "FILE:LINE: field.path: what to fix" ---

Loc = tuple[str | int, ...]

SCENARIOS_DIR = Path(__file__).resolve().parents[1] / "scenarios"

# Which model checks the keys of a table, for "unknown key" messages ("*" is any list index).
_TABLE_MODELS: dict[tuple[str, ...], type[BaseModel]] = {
    (): Scenario,
    ("limits",): LimitsModel,
    ("workloads", "*"): WorkloadModel,
    ("isolation",): IsolationModel,
    ("isolation", "aggressors", "*"): AggressorModel,
    ("isolation", "aggressors", "*", "limits"): LimitsModel,
    ("quick",): QuickModel,
}
_TOML_TYPES = {
    bool: "boolean",
    int: "integer",
    float: "float",
    str: "string",
    list: "array",
    dict: "table",
}
SCENARIO_MAX_BYTES = 1 << 20  # far above any real scenario; stops `bench run /dev/zero`


class ScenarioError(InputError):
    """A scenario file that cannot be read or does not validate; str starts with FILE:LINE."""


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file; raise ScenarioError naming the line and the field."""
    try:
        with path.open("rb") as file:
            raw = file.read(SCENARIO_MAX_BYTES + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ScenarioError(f"{path}: cannot read the scenario file: {reason}.") from None
    if len(raw) > SCENARIO_MAX_BYTES:
        raise ScenarioError(f"{path}: larger than 1 MiB; that is not a scenario file.")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _toml_error_line(str(exc), text)
        raise ScenarioError(f"{path}:{line}: invalid TOML: {exc}.") from None
    duplicate = _duplicate_workload(data)
    if duplicate is not None:
        loc, message = duplicate
        raise ScenarioError(_located(path, text, data, loc, message))
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(_validation_message(path, text, data, exc)) from None


def resolve_scenario(name_or_path: str) -> Path:
    """A scenario file path, or the path of the shipped scenario of that name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if SAFE_NAME.match(name_or_path) and "/" not in name_or_path:
        shipped = SCENARIOS_DIR / f"{path.stem if path.suffix == '.toml' else name_or_path}.toml"
        if shipped.is_file():
            return shipped
    names = ", ".join(name for name, _ in shipped_scenarios()) or "none"
    raise ScenarioError(
        f"{name_or_path}: no such scenario file, and no shipped scenario of that name "
        f"(shipped: {names}). Give a path to a .toml file or a name from `bench list`."
    )


def shipped_scenarios() -> list[tuple[str, str]]:
    """(name, description) of each scenario in the repository's scenarios/ directory."""
    found = []
    for path in sorted(SCENARIOS_DIR.glob("*.toml")):
        try:
            description = load_scenario(path).description
        except ScenarioError as exc:
            description = f"(invalid: {exc})"
        found.append((path.stem, description))
    return found


def _toml_error_line(message: str, text: str) -> int:
    """tomllib says "(at line 3, column 9)" or "(at end of document)"."""
    match = re.search(r"at line (\d+)", message)
    if match:
        return int(match.group(1))
    return max(1, text.count("\n") + (0 if text.endswith("\n") else 1))


def _duplicate_workload(data: dict[str, Any]) -> tuple[Loc, str] | None:
    """The second workload reusing a name; checked before validation to point at its line."""
    workloads = data.get("workloads")
    if not isinstance(workloads, list):
        return None
    seen: dict[str, int] = {}
    for index, workload in enumerate(workloads):
        name = workload.get("name") if isinstance(workload, dict) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            return (
                ("workloads", index, "name"),
                f"workload name {name!r} is already used by workloads[{seen[name]}]; "
                "names must be unique",
            )
        seen[name] = index
    return None


def _validation_message(path: Path, text: str, data: object, exc: ValidationError) -> str:
    """The first problem, located; errors at one field (union members) merge into one."""
    errors = exc.errors(include_url=False)
    first_loc = _data_loc(data, errors[0]["loc"], errors[0]["type"])
    same = [e for e in errors if _data_loc(data, e["loc"], e["type"]) == first_loc]
    message = _describe(data, first_loc, same)
    others = len({_data_loc(data, e["loc"], e["type"]) for e in errors}) - 1
    if others:
        message += f" ({others} more problem{'s' if others > 1 else ''} after this one)"
    return _located(path, text, data, first_loc, message)


def _located(path: Path, text: str, data: object, loc: Loc, message: str) -> str:
    field = _field_path(loc) or "scenario"
    return f"{path}:{locate_line(text, loc)}: {field}: {message}."


def _data_loc(data: object, loc: tuple[str | int, ...], error_type: str) -> Loc:
    """The part of a pydantic loc that names data in the file (drops union tags like 'int')."""
    kept: list[str | int] = []
    node = data
    for index, part in enumerate(loc):
        found, child = _child(node, part)
        if found:
            node = child
        elif error_type == "missing" and index == len(loc) - 1:
            pass  # the missing key itself: still name it
        else:
            break
        kept.append(part)
    return tuple(kept)


def _describe(data: object, loc: Loc, errors: list[Any]) -> str:
    error = errors[0]
    if error["type"] == "missing":
        return "this required key is missing"
    if error["type"] == "extra_forbidden":
        parent = tuple("*" if isinstance(p, int) else p for p in loc[:-1])
        model = _TABLE_MODELS.get(parent)
        known = f"; known keys: {', '.join(model.model_fields)}" if model else ""
        return f"unknown key {loc[-1]!r}{known}"
    value = _value_at(data, loc)
    got = f"got {_TOML_TYPES.get(type(value), type(value).__name__)}"
    if all(e["type"].endswith("_type") for e in errors):
        wanted = list(dict.fromkeys(e["msg"].removeprefix("Input should be ") for e in errors))
        if len(wanted) > 2:
            wanted = [", ".join(wanted[:-1]), wanted[-1]]
        return f"expected {' or '.join(wanted)}, {got}"
    msg = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if isinstance(value, bool | int | float | str) and error["type"] != "value_error":
        msg += f" ({got} {value!r})"
    return msg


def _value_at(data: object, loc: Loc) -> object:
    for part in loc:
        data = _child(data, part)[1]
    return data


def _child(node: object, part: str | int) -> tuple[bool, object]:
    """(True, node[part]) when the TOML data has that key or index, else (False, None)."""
    if isinstance(node, dict) and part in node:
        return True, node[part]
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return True, node[part]
    return False, None


def _field_path(loc: Loc) -> str:
    """("workloads", 1, "stressor") -> "workloads[1].stressor"."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = part if _BARE_KEY.match(part) else json.dumps(part)  # TOML's own quoting
            text += f".{key}" if text else key
    return text


# Key lines look like `name = ...`, `limits.cpus = ...` or `"odd key" = ...`.
_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_KEY_RE = re.compile(rf"^\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")
_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")
_INLINE_KEY_RE = re.compile(r"[{,]\s*([A-Za-z0-9_-]+)\s*=")


def locate_line(text: str, loc: Loc) -> int:
    """The line defining `loc`, else its nearest enclosing table or key, else 1.

    tomllib keeps no positions, so this scans the text: [table] and [[array]] headers
    (the nth [[workloads]] is workloads[n-1]), dotted keys, and keys of one-line inline
    tables. Multi-line strings are skipped.
    """
    lines = _key_lines(text)
    for size in range(len(loc), 0, -1):
        if loc[:size] in lines:
            return lines[loc[:size]]
    return 1


def _key_lines(text: str) -> dict[Loc, int]:
    lines: dict[Loc, int] = {}
    array_counts: dict[Loc, int] = {}  # path of an array of tables -> its last index
    table: Loc = ()
    in_string: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if in_string is not None:  # inside a multi-line string: only look for its end
            if raw.count(in_string) % 2:
                in_string = None
            continue
        for quotes in ('"""', "'''"):
            if raw.count(quotes) % 2:
                in_string = quotes
        header = _HEADER_RE.match(raw)
        if header:
            parts = _split_key(header.group(2))
            table = _resolve_table(parts, array_counts, is_array=header.group(1) == "[[")
            _record(lines, table, number)
            continue
        key = _KEY_RE.match(raw)
        if key:
            path = table + _split_key(key.group(1))
            _record(lines, path, number)
            for inner in _INLINE_KEY_RE.findall(raw[key.end() :]):
                lines.setdefault((*path, inner), number)
    return lines


def _resolve_table(parts: Loc, array_counts: dict[Loc, int], is_array: bool) -> Loc:
    """Header parts -> loc, indexing through arrays of tables ([[workloads]] -> workloads, n)."""
    resolved: Loc = ()
    for index, part in enumerate(parts):
        resolved = (*resolved, part)
        if is_array and index == len(parts) - 1:
            array_counts[resolved] = array_counts.get(resolved, -1) + 1
        if resolved in array_counts:
            resolved = (*resolved, array_counts[resolved])
    return resolved


def _split_key(key: str) -> Loc:
    return tuple(part.strip("\"'") for part in re.findall(_KEY_PART, key))


def _record(lines: dict[Loc, int], path: Loc, number: int) -> None:
    for size in range(1, len(path) + 1):
        lines.setdefault(path[:size], number)
