"""bench history on generated stores: a known step found at its run and annotated, noise left
alone, other scenarios and missing metrics reported and left out, every output format."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bench import analysis, stats
from bench.changepoints import change_points
from bench.cli import main
from bench.history import load_history
from bench.report.history import build_history, render_history_markdown
from tests.storegen import ServiceCase, StoreSpec, write_store

SCENARIO_SHA = "5e" * 32
RUNS = 24
STEP_AT = 16  # docker 25 arrives with run 16 and costs 10 % of throughput
KERNEL_AT = 8  # a kernel update that changes nothing measured
FIRST_NIGHT = datetime(2026, 11, 1, 2, 17, tzinfo=UTC)


def nightly(i: int, **kwargs: object) -> StoreSpec:
    settings: dict[str, object] = {
        "run_id": f"nightly-{i:03d}",
        "started_at": (FIRST_NIGHT + timedelta(days=i)).isoformat(),
        "scenario_sha256": SCENARIO_SHA,
        "scenario_name": "smoke",
        "seed": 1000 + i,
        "workloads": ("cpu",),
        "repetitions": 5,
        "warmups": 0,
        "trial_duration_s": 1.0,
        "sample_hz": 1.0,
        "throughput_factor": {"docker": 0.9 if i >= STEP_AT else 1.0},
        "runtime_versions": {"docker": "25.0.3" if i >= STEP_AT else "24.0.7"},
        "kernel": "6.1.0-27" if i >= KERNEL_AT else "6.1.0-26",
    }
    settings.update(kwargs)
    return StoreSpec(**settings)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 nightly runs, plus one of another scenario, one incomplete, one without docker."""
    root = tmp_path_factory.mktemp("results")
    for i in range(RUNS):
        write_store(root, nightly(i))
    write_store(root, nightly(30, run_id="other-scenario", scenario_sha256="77" * 32))
    write_store(root, nightly(31, run_id="interrupted", status="incomplete"))
    write_store(root, nightly(10, run_id="quick-one", quick=True))
    write_store(
        root,
        nightly(
            5,
            run_id="no-docker",
            started_at="2026-11-05T12:00:00+00:00",
            runtimes=("bare", "podman", "lxc"),
        ),
    )
    return root


def test_step_is_found_at_its_run_and_annotated(results: Path) -> None:
    history = load_history([results])
    assert history.scenario is not None and history.scenario.sha256 == SCENARIO_SHA
    found = {(c.runtime, c.workload, c.metric, c.run_id) for c in history.change_points}
    # Only the docker step: every other series (bare, podman, lxc throughput and all CPU,
    # memory, wall, start and stop series) is noise, and the kernel update is not a step.
    assert found == {("docker", "cpu", "throughput", f"nightly-{STEP_AT:03d}")}
    change = history.change_points[0]
    assert change.previous_run_id == f"nightly-{STEP_AT - 1:03d}"
    assert change.regression and -13.0 < change.change_pct < -7.0
    assert [(c.what, c.before, c.after) for c in change.changes] == [
        ("runtime docker", "24.0.7", "25.0.3")
    ]


def test_other_scenarios_incomplete_runs_and_missing_series_are_left_out(results: Path) -> None:
    history = load_history([results])
    reasons = {(e.run_id, e.runtime): e.reason for e in history.excluded}
    assert "another scenario" in reasons[("other-scenario", "")]
    assert reasons[("interrupted", "")] == "run status incomplete"
    assert reasons[("quick-one", "")] == "a --quick run, not a full as the newest run"
    assert reasons[("no-docker", "docker")].startswith("no usable value of throughput, cpu_s")
    points = history.points
    assert not points["run_id"].isin(["other-scenario", "interrupted", "quick-one"]).any()
    # The run without docker still counts for the other runtimes, never for docker.
    assert set(points.loc[points["run_id"] == "no-docker", "runtime"]) == {"bare", "podman", "lxc"}
    times = [r.started_at for r in history.runs]
    assert times == sorted(times) and len(history.runs) == RUNS + 1


def test_points_carry_their_runs_intervals(results: Path) -> None:
    history = load_history([results / "nightly-003", results / "nightly-004"], ["throughput"])
    run = analysis.load_run(results / "nightly-003")
    solo = analysis.usable_solo(run)
    docker = solo[solo["label"] == "docker"]["throughput"].to_numpy(float)
    point = history.points[
        (history.points["run_id"] == "nightly-003") & (history.points["runtime"] == "docker")
    ].iloc[0]
    single = stats.median_ci(docker)
    assert point["value"] == pytest.approx(single.value)
    assert point["n"] == 5 and point["low"] <= point["value"] <= point["high"]
    assert set(history.points["metric"]) == {"throughput"}


def test_median_cis_agree_with_median_ci() -> None:
    rng = np.random.default_rng(5)
    groups = [rng.normal(100.0, 3.0, size) for size in (0, 1, 2, 5, 5, 10, 11)]
    for group, batch in zip(groups, stats.median_cis(groups), strict=True):
        one = stats.median_ci(group)
        if group.size == 0:
            assert math.isnan(batch.value) and batch.n == 0
            continue
        assert batch.value == one.value and batch.n == one.n
        width = max(one.high - one.low, 1e-9)
        assert abs(batch.low - one.low) <= 0.35 * width
        assert abs(batch.high - one.high) <= 0.35 * width


def test_noise_alone_rarely_gives_a_change_point_and_a_step_is_found() -> None:
    """The default settings' false-alarm rate on pure Gaussian noise, and the hit rate of a
    3-sigma step (docs/history.md has the fuller comparison)."""
    rng = np.random.default_rng(20261202)
    series = 400
    alarms = {
        n: sum(bool(change_points(100 + 2 * rng.standard_normal(n))) for _ in range(series))
        for n in (10, 30, 100)
    }
    assert alarms[10] / series <= 0.05, alarms
    assert alarms[30] / series <= 0.02, alarms
    assert alarms[100] / series <= 0.01, alarms
    hits = 0
    for _ in range(series):
        values = 100 + 2 * rng.standard_normal(30)
        values[20:] += 6.0
        hits += change_points(values) == [20]
    assert hits / series >= 0.75


def test_outputs_and_cli(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "history"
    done = CliRunner().invoke(main, ["history", str(results), "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "left out: other-scenario: another scenario" in done.output
    page = (out / "index.html").read_text()
    ET.fromstring(page.split("\n", 1)[1])  # well-formed, like the run report
    assert page.count("<svg") == 6  # one trend figure per metric of the cpu workload
    assert "dashed red lines: change points" in page and "95 % CI (band)" in page
    document = json.loads((out / "history.json").read_text())
    assert [c["run_id"] for c in document["change_points"]] == [f"nightly-{STEP_AT:03d}"]
    docker = next(
        s for s in document["series"] if s["runtime"] == "docker" and s["metric"] == "throughput"
    )
    assert len(docker["points"]) == RUNS  # every run but "no-docker"
    assert len(document["runs"]) == RUNS + 1
    summary = (out / "history.md").read_text()
    assert summary == render_history_markdown(load_history([results]))
    assert "runtime docker: 24.0.7 → 25.0.3" in summary
    assert build_history(load_history([results], ["start_s"]), tmp_path / "md", {"md"}) == [
        tmp_path / "md" / "history.md"
    ]


def test_user_mistakes_exit_2(results: Path, tmp_path: Path) -> None:
    unknown = CliRunner().invoke(main, ["history", str(results), "--metric", "speed"])
    assert unknown.exit_code == 2 and "unknown history metric(s) speed" in unknown.output
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = CliRunner().invoke(main, ["history", str(empty)])
    assert nothing.exit_code == 2 and "neither a bench run directory" in nothing.output


def test_a_p99_step_of_a_service_is_found_in_its_latency_series(tmp_path: Path) -> None:
    """Service workloads' percentiles are series too: docker/published's latency x1.6 from
    run 10 on is found there, and bare's series (unchanged) stays quiet."""
    service = "app-http"
    for i in range(16):
        factor = {"docker/published": 1.6 if i >= 10 else 1.0}
        write_store(
            tmp_path,
            nightly(
                i,
                workloads=(),
                runtimes=("bare", "docker"),
                throughput_factor={},
                services=(ServiceCase(workload=service, latency_factor=factor, requests=1500),),
            ),
        )
    history = load_history([tmp_path], ["latency_p99_s", "latency_p50_s"])
    points = history.points
    assert set(points["metric"]) == {"latency_p99_s", "latency_p50_s"}
    found = {(c.runtime, c.metric, c.run_id) for c in history.change_points}
    assert ("docker/published", "latency_p99_s", "nightly-010") in found, found
    assert not [c for c in history.change_points if c.runtime.startswith("bare")], found
    p99 = points[(points["metric"] == "latency_p99_s") & (points["runtime"] == "docker/published")]
    before = p99[p99["run_id"] == "nightly-009"].iloc[0]
    after = p99[p99["run_id"] == "nightly-010"].iloc[0]
    assert after["value"] / before["value"] == pytest.approx(1.6, rel=0.25)
