"""compare_runs on synthetic runs: an injected regression is flagged, a rerun is not."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from bench import analysis
from bench.cli import main
from bench.compare import compare_runs, to_markdown
from tests.storegen import ServiceCase, StoreSpec, write_store


def _run(tmp_path: Path, run_id: str, seed: int, **kwargs: object) -> analysis.Run:
    settings: dict[str, object] = {"repetitions": 10, "noise": 0.02, "trial_duration_s": 1.0}
    settings.update(sample_hz=2.0, **kwargs)
    spec = StoreSpec(run_id=run_id, seed=seed, **settings)  # type: ignore[arg-type]
    return analysis.load_run(write_store(tmp_path, spec))


def test_flags_injected_10pct_throughput_regression(tmp_path: Path) -> None:
    base = _run(tmp_path, "base", seed=1)
    new = _run(tmp_path, "new", seed=2, throughput_factor={"docker": 0.90})
    comparison = compare_runs(base, new, threshold_pct=5.0)
    assert comparison.has_regression
    flagged = {(c.runtime, c.workload, c.metric) for c in comparison.regressions}
    assert flagged == {("docker", "cpu", "throughput"), ("docker", "vm", "throughput")}
    change = next(c for c in comparison.regressions if c.workload == "cpu")
    assert change.change_low_pct <= -10.0 <= change.change_high_pct
    assert change.p_value < 0.05
    md = to_markdown(comparison)
    assert "2 regression(s)" in md and "| ❌ | docker | cpu | throughput |" in md


def test_three_repetitions_cannot_fail_the_gate_and_the_summary_says_so(tmp_path: Path) -> None:
    """A 30 % drop in 3 repetitions against 3 is not significant (smallest p 0.1): no
    regression, but every such row is marked and the summary says the gate cannot fail."""
    base = _run(tmp_path, "base", seed=1, repetitions=3)
    new = _run(tmp_path, "new", seed=2, repetitions=3, throughput_factor={"docker": 0.70})
    comparison = compare_runs(base, new, threshold_pct=5.0)
    assert not comparison.has_regression
    assert comparison.undecidable and len(comparison.undecidable) == len(comparison.changes)
    md = to_markdown(comparison)
    assert f"{len(comparison.changes)} of {len(comparison.changes)} changes (marked ❔)" in md
    assert "| ❔ | docker | cpu | throughput |" in md
    decided = compare_runs(_run(tmp_path, "b5", seed=1), _run(tmp_path, "n5", seed=2))
    assert not decided.undecidable and "❔" not in to_markdown(decided)


def test_rerun_of_same_distribution_is_not_a_regression(tmp_path: Path) -> None:
    regressions = 0
    for seed in range(5):
        base = _run(tmp_path, f"a{seed}", seed=100 + seed)
        new = _run(tmp_path, f"b{seed}", seed=200 + seed)
        comparison = compare_runs(base, new, threshold_pct=5.0)
        assert len(comparison.changes) == 4 * 2 * 5  # runtimes x workloads x metrics
        regressions += len(comparison.regressions)
    assert regressions == 0
    assert "No regression" in to_markdown(comparison)


def test_smaller_is_better_metrics(tmp_path: Path) -> None:
    base = _run(tmp_path, "base", seed=3)
    slow_start = {"bare": 0.004, "docker": 0.9, "podman": 0.38, "lxc": 0.6}
    new = _run(tmp_path, "new", seed=4, start_s=slow_start, cpu_factor={"podman": 0.8})
    comparison = compare_runs(base, new, threshold_pct=5.0)
    flagged = {(c.runtime, c.metric) for c in comparison.regressions}
    assert flagged == {("docker", "start_s")}
    improved = {(c.runtime, c.metric) for c in comparison.changes if c.improvement}
    assert ("podman", "cpu_s") in improved


def test_small_significant_change_below_threshold_is_not_regression(tmp_path: Path) -> None:
    base = _run(tmp_path, "base", seed=5, noise=0.005)
    new = _run(tmp_path, "new", seed=6, noise=0.005, throughput_factor={"lxc": 0.97})
    comparison = compare_runs(base, new, threshold_pct=5.0)
    lxc = [c for c in comparison.changes if c.runtime == "lxc" and c.metric == "throughput"]
    assert all(c.significant and not c.regression for c in lxc)
    assert compare_runs(base, new, threshold_pct=2.0).has_regression


def test_disjoint_runs(tmp_path: Path) -> None:
    base = _run(tmp_path, "base", seed=7, runtimes=("bare",))
    new = _run(tmp_path, "new", seed=8, runtimes=("docker",))
    comparison = compare_runs(base, new)
    assert comparison.changes == () and not comparison.has_regression
    assert "nothing to compare" in to_markdown(comparison)
    assert comparison.to_frame().empty


def _service_store(tmp_path: Path, run_id: str, seed: int, factor: float) -> Path:
    case = ServiceCase(
        latency_factor={label: factor for label in ("bare/host", "docker/host", "docker/published")}
    )
    spec = StoreSpec(
        run_id=run_id, seed=seed, runtimes=(), workloads=(), repetitions=10, services=(case,)
    )
    return write_store(tmp_path, spec)


def test_p99_regression_fails_the_gate(tmp_path: Path) -> None:
    base = _service_store(tmp_path, "base", seed=7, factor=1.0)
    slower = _service_store(tmp_path, "slower", seed=8, factor=1.3)
    result = CliRunner().invoke(main, ["compare", str(base), str(slower), "--markdown"])
    assert result.exit_code == 1, result.output
    comparison = compare_runs(analysis.load_run(base), analysis.load_run(slower))
    flagged = {(c.runtime, c.metric) for c in comparison.regressions}
    assert flagged == {(label, "latency_p99_s") for label in ServiceCase().paths}
    change = comparison.regressions[0]
    assert change.change_low_pct <= 30.0 <= change.change_high_pct
    assert "| ❌ | bare/host | http-get | latency_p99_s |" in result.output


def test_unchanged_service_run_passes_the_gate(tmp_path: Path) -> None:
    base = _service_store(tmp_path, "base", seed=9, factor=1.0)
    again = _service_store(tmp_path, "again", seed=10, factor=1.0)
    result = CliRunner().invoke(main, ["compare", str(base), str(again)])
    assert result.exit_code == 0, result.output
    assert "latency_p99_s" in result.output
