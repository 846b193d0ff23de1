"""`bench run BAD_FILE`: exit 2, one message naming file:line and the field, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import REPO, bench

BAD = REPO / "tests" / "fixtures" / "scenarios" / "bad"


@pytest.mark.parametrize(
    ("name", "line", "field"),
    [
        ("unknown_stressor", 12, "workloads[1].stressor"),
        ("unknown_key", 10, "workloads[1].stresor"),
        ("bad_syntax", 3, "invalid TOML"),
        ("missing_workload_name", 8, "workloads[1].name"),
        ("duplicate_workload_names", 13, "workloads[2].name"),
        ("bad_memory", 6, "limits.memory"),
        ("zero_interval", 3, "sample_interval_ms"),
    ],
)
def test_bad_scenario_exits_2_with_location(name: str, line: int, field: str) -> None:
    relative = f"tests/fixtures/scenarios/bad/{name}.toml"
    done = bench("run", relative)
    assert done.returncode == 2, done.stderr
    assert f"{relative}:{line}: " in done.stderr
    assert field in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_missing_scenario_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    done = bench("run", str(missing))
    assert done.returncode == 2, done.stderr
    assert str(missing) in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_bad_scenario_from_another_directory(tmp_path: Path) -> None:
    """Paths are reported as the user typed them, relative to where bench was started."""
    (tmp_path / "x.toml").write_text('name = "x"\n[[workloads]]\nname = "a"\nstressor = "cpux"\n')
    done = bench("run", "x.toml", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "x.toml:4: workloads[0].stressor: unknown stressor 'cpux'" in done.stderr
    assert "Traceback" not in done.stderr


def test_list_shows_the_smoke_scenario() -> None:
    done = bench("list")
    assert done.returncode == 0, done.stderr
    assert "smoke" in done.stdout
