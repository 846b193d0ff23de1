"""Scenario loading: valid files load; every bad file fails with FILE:LINE and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.errors import InputError
from bench.runtimes import registry
from bench.scenario import Scenario
from bench.scenario_load import (
    SCENARIOS_DIR,
    ScenarioError,
    load_scenario,
    locate_line,
    resolve_scenario,
    shipped_scenarios,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "scenarios"
BAD = sorted((FIXTURES / "bad").glob("*.toml"))


def _expectation(path: Path) -> tuple[int, str]:
    """Each bad file starts with `# expect: LINE FIELD`."""
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} lacks its '# expect:' line"
    line, field = first.removeprefix("# expect: ").split()
    return int(line), field


def test_bad_corpus_is_there() -> None:
    assert len(BAD) >= 25


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_scenario_names_line_and_field(path: Path) -> None:
    line, field = _expectation(path)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert field in message
    assert "\n" not in message  # one paragraph
    assert isinstance(caught.value, InputError)
    assert caught.value.exit_code == 2


def test_unknown_stressor_message_lists_known_ones() -> None:
    path = FIXTURES / "bad" / "unknown_stressor.toml"
    with pytest.raises(ScenarioError, match=r":12: workloads\[1\]\.stressor: unknown stressor"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match="known: cpu, vm, matrix"):
        load_scenario(path)


def test_unknown_key_lists_the_known_keys() -> None:
    with pytest.raises(ScenarioError, match="known keys: name, stressor, workers"):
        load_scenario(FIXTURES / "bad" / "unknown_key.toml")


def test_toml_syntax_error_reuses_tomllib_position() -> None:
    with pytest.raises(ScenarioError, match=r"bad_syntax\.toml:3: invalid TOML: .*line 3, column"):
        load_scenario(FIXTURES / "bad" / "bad_syntax.toml")


def test_missing_file_names_the_file_without_a_line(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value).startswith(f"{path}: cannot read the scenario file: ")
    assert "No such file" in str(caught.value)


def test_directory_is_not_a_scenario(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=f"^{tmp_path}: cannot read"):
        load_scenario(tmp_path)


def test_unreadable_path(tmp_path: Path) -> None:
    """Root reads any file whatever its mode, so make the path itself unreadable."""
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "scenario.toml"
    with pytest.raises(ScenarioError, match=f"^{path}: cannot read the scenario file: Not a dir"):
        load_scenario(path)


def test_huge_or_endless_input_is_refused() -> None:
    with pytest.raises(ScenarioError, match=r"^/dev/zero: larger than 1 MiB"):
        load_scenario(Path("/dev/zero"))


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(ScenarioError, match=f"^{path}: cannot read the scenario file: .*utf-8"):
        load_scenario(path)


def test_several_problems_report_the_first_and_count_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "many.toml"
    path.write_text('name = "x"\nrepetitions = 0\nwarmups = -1\n[[workloads]]\nname = "a"\n')
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:2: repetitions: ")
    assert "(2 more problems after this one)" in message


def test_smoke_scenario_loads_as_documented() -> None:
    scenario = load_scenario(SCENARIOS_DIR / "smoke.toml")
    assert scenario.name == "smoke"
    assert scenario.runtimes == list(registry.names())  # every shipped one (test_registry)
    assert scenario.repetitions == 2
    assert scenario.warmups in (0, 1)
    assert scenario.sample_interval_ms == 100
    assert scenario.sample_detail_interval_ms == 1000
    assert scenario.limits.to_limits().memory_bytes == 512 << 20
    assert [w.stressor for w in scenario.workloads] == ["cpu", "vm"]
    assert scenario.workloads[1].options["vm-bytes"] == "128m"


def test_smoke_scenario_fits_its_time_budget() -> None:
    """Every runtime x every trial's stressor time must leave room for start/stop in 90 s."""
    scenario = load_scenario(SCENARIOS_DIR / "smoke.toml")
    rounds = scenario.repetitions + scenario.warmups
    busy_s = len(scenario.runtimes) * rounds * sum(w.duration_s for w in scenario.workloads)
    assert busy_s <= 45


def test_every_shipped_scenario_loads() -> None:
    shipped = shipped_scenarios()
    assert ("smoke", load_scenario(SCENARIOS_DIR / "smoke.toml").description) in shipped
    for name, description in shipped:
        assert not description.startswith("(invalid"), f"{name}: {description}"


def test_resolve_by_name_path_and_with_suffix(tmp_path: Path) -> None:
    assert resolve_scenario("smoke") == SCENARIOS_DIR / "smoke.toml"
    assert resolve_scenario("smoke.toml") == SCENARIOS_DIR / "smoke.toml"
    own = tmp_path / "own.toml"
    own.write_text("")
    assert resolve_scenario(str(own)) == own


def test_resolve_unknown_name_lists_shipped_ones() -> None:
    with pytest.raises(ScenarioError, match=r"^no-such-thing: no such scenario.*shipped: .*smoke"):
        resolve_scenario("no-such-thing")
    with pytest.raises(ScenarioError, match=r"^\.\./etc/passwd: no such scenario"):
        resolve_scenario("../etc/passwd")


def test_valid_variants_load(tmp_path: Path) -> None:
    """Inline tables, dotted keys, byte sizes and command workloads are all valid."""
    path = tmp_path / "ok.toml"
    path.write_text(
        'name = "ok"\nlimits = { memory = 268435456, cpuset = "0-1,3" }\n'
        'workloads = [{ name = "s", command = ["sleep", "1"], duration_s = 0.5 }]\n'
    )
    scenario = load_scenario(path)
    assert isinstance(scenario, Scenario)
    assert scenario.limits.to_limits().memory_bytes == 256 << 20
    assert scenario.workloads[0].command == ["sleep", "1"]


# The locator on its own: TOML shapes the corpus does not cover.
LOCATOR_TEXT = """\
name = "x"
[limits]
cpus = 1

[[workloads]]
name = "a"
[workloads.options]
vm-bytes = "1m"

[[workloads]]
name = "b"
"quoted.key" = 1
[[workloads.steps]]
x = 1
[[workloads.steps]]
x = 2
"""


@pytest.mark.parametrize(
    ("loc", "line"),
    [
        (("name",), 1),
        (("limits",), 2),
        (("limits", "cpus"), 3),
        (("limits", "memory"), 2),  # absent key: its table
        (("workloads", 0), 5),
        (("workloads", 0, "options", "vm-bytes"), 8),
        (("workloads", 0, "options", "vm-bytes", "int"), 8),  # pydantic union tag
        (("workloads", 1, "name"), 11),
        (("workloads", 1, "quoted.key"), 12),
        (("workloads", 1, "steps", 1, "x"), 16),
        (("workloads", 2), 5),  # no such table: the array's first one
        ((), 1),
    ],
)
def test_locate_line(loc: tuple[str | int, ...], line: int) -> None:
    assert locate_line(LOCATOR_TEXT, loc) == line
