"""`bench run BAD_FILE`: exit 2, one message naming file:line and the field, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import REPO, bench, require

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


def test_stream_past_its_memory_limit_on_this_host_exits_2(tmp_path: Path) -> None:
    """The L3 stress-ng would size stream's arrays from is this host's own (preflight)."""
    from bench.preflight import STREAM_BYTES_PER_L3_BYTE, host_limits

    l3_bytes = host_limits().l3_cache_bytes
    require(l3_bytes is not None, "this CPU reports no level 3 cache")
    assert l3_bytes is not None
    limit_mib = STREAM_BYTES_PER_L3_BYTE * l3_bytes // (1 << 20) - 1  # one MiB short
    text = f'name = "s"\n[limits]\nmemory = "{limit_mib}m"\n[[workloads]]\nname = "bw"\n'
    (tmp_path / "s.toml").write_text(text + 'stressor = "stream"\n')
    done = bench("run", "s.toml", "--results-dir", str(tmp_path / "results"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "s.toml:3: limits.memory: workload 'bw' is stress-ng's stream" in done.stderr
    assert not (tmp_path / "results").exists()  # refused before anything ran or was written
