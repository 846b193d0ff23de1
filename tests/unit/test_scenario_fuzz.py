"""Fuzz: whatever the file holds, load_scenario returns a Scenario or raises ScenarioError."""

from __future__ import annotations

import copy
import datetime as dt
import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.scenario import Scenario
from bench.scenario_load import ScenarioError, load_scenario

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

VALID: dict[str, Any] = {
    "name": "fuzz",
    "description": "a valid scenario to mutate",
    "runtimes": ["bare", "docker"],
    "repetitions": 2,
    "warmups": 1,
    "sample_interval_ms": 100,
    "timeout_s": 60,
    "limits": {"cpus": 1, "cpuset": "0", "memory": "256m", "pids": 100},
    "workloads": [
        {"name": "a", "stressor": "cpu", "workers": 1, "duration_s": 2, "options": {"x": 1}},
        {"name": "b", "command": ["sleep", "1"], "duration_s": 1},
    ],
}

BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

# Values TOML can hold: every scalar type, arrays and tables, including nasty numbers.
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["cpu", "vm", "256m", "0-1", "-1", "1e3", "bare", "", "\x00", "a\nb"]),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)),
    st.dates(),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def toml_key(key: str) -> str:
    return key if BARE_KEY.match(key) else toml_string(key)


def toml_string(text: str) -> str:
    escaped = "".join(c if c.isprintable() and c not in '"\\' else f"\\U{ord(c):08x}" for c in text)
    return f'"{escaped}"'


def toml_value(value: Any) -> str:
    """Serialise as an inline TOML value (no writer in the stdlib)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(data: dict[str, Any]) -> str:
    """Top-level keys, [limits] as a table and workloads as [[workloads]] when shaped so."""
    lines = []
    tables = {}
    for key, value in data.items():
        if key in ("limits", "workloads"):
            tables[key] = value
        else:
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
    limits = tables.get("limits")
    if isinstance(limits, dict):
        lines.append("[limits]")
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in limits.items()]
    elif "limits" in tables:
        lines.insert(0, f"limits = {toml_value(limits)}")
    workloads = tables.get("workloads")
    if isinstance(workloads, list) and all(isinstance(w, dict) for w in workloads):
        for workload in workloads:
            lines.append("[[workloads]]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in workload.items()]
    elif "workloads" in tables:
        lines.insert(0, f"workloads = {toml_value(workloads)}")
    return "\n".join(lines) + "\n"


def paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in the valid scenario, to pick one to mutate."""
    found = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            found += paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += paths(value, (*prefix, index))
    return found


FIELD_PATHS = paths(VALID)


def mutated(path: tuple[Any, ...], value: Any, delete: bool) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    node: Any = data
    for part in path[:-1]:
        node = node[part]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


def check(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    try:
        result = load_scenario(path)
    except ScenarioError as exc:
        message = str(exc)
        assert message.startswith(f"{path}:"), message
        located = re.match(rf"^{re.escape(str(path))}:(\d+): ", message)
        assert located, message
        assert 1 <= int(located.group(1)) <= max(1, len(text.splitlines())), message
        assert "\n" not in message
    else:
        assert isinstance(result, Scenario)


def test_valid_base_loads(tmp_path: Path) -> None:
    path = tmp_path / "base.toml"
    path.write_text(toml_document(VALID))
    assert load_scenario(path).name == "fuzz"


@FUZZ
@given(path=st.sampled_from(FIELD_PATHS), value=values, delete=st.booleans())
def test_any_value_in_any_field(
    tmp_path: Path, path: tuple[Any, ...], value: Any, delete: bool
) -> None:
    check(tmp_path / "fuzz.toml", toml_document(mutated(path, value, delete)))


@FUZZ
@given(data=st.dictionaries(st.sampled_from([*VALID, "extra", ""]), values, max_size=8))
def test_random_documents(tmp_path: Path, data: dict[str, Any]) -> None:
    check(tmp_path / "fuzz.toml", toml_document(data))


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list('[]{}="#.,\n abc123-_\'"\\')), max_size=80))
def test_random_text(tmp_path: Path, text: str) -> None:
    check(tmp_path / "fuzz.toml", text)
