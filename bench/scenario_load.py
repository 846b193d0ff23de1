"""Loading scenario files: TOML text -> Scenario; every error as "FILE:LINE: field: fix"."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from bench.errors import InputError
from bench.scenario import (
    AggressorModel,
    IsolationModel,
    LimitsModel,
    QuickModel,
    Scenario,
    WorkloadModel,
)
from bench.scenario_values import SAFE_NAME

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
        raise ScenarioError(located(path, text, loc, message))
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
    return located(path, text, first_loc, message)


def located(path: Path, text: str, loc: Loc, message: str) -> str:
    """ "FILE:LINE: field: message." for the field at `loc` of the scenario `text`."""
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
