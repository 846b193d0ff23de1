"""A runtime added through the registry alone goes through every part of bench.

`bare-alias` is a second name for bare metal (BareRuntime), registered in-process: the
scenario, the plan, the runner (a real tiny run under bare cgroups), analysis, every
report format and doctor must take it with no other edit.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import analysis
from bench.doctor import run_doctor
from bench.report import build_report
from bench.runner import RunOptions, run_scenario
from bench.runtimes import registry
from bench.summary import print_run_summary
from tests.helpers import TINY_SCENARIO, require, require_root

ALIAS = "bare-alias"
ALIAS_COLOUR = "#e377c2"


@pytest.fixture
def alias() -> Iterator[registry.Entry]:
    entry = dataclasses.replace(
        registry.entry("bare"),
        name=ALIAS,
        order=registry.entry("bare").order + 1,
        colour=ALIAS_COLOUR,
        title="",
        baseline=False,
    )
    registry.register(entry)
    try:
        yield entry
    finally:
        registry.unregister(ALIAS)


def test_a_runtime_registered_alone_runs_is_analysed_reported_and_checked(
    alias: registry.Entry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_root()
    require(shutil.which("stress-ng") is not None, "stress-ng is not installed")
    scenario = tmp_path / "registry.toml"
    scenario.write_text(TINY_SCENARIO.format(runtimes=json.dumps(["bare", ALIAS])))

    outcome = run_scenario(scenario, RunOptions(results_dir=tmp_path / "results"))
    assert outcome.status == "complete", outcome
    assert not outcome.skipped_runtimes

    run = analysis.load_run(outcome.run_dir)
    assert run.manifest.runtimes[ALIAS].available
    measured = run.trials[~run.trials["warmup"]]
    assert measured.groupby("runtime")["status"].agg(set).to_dict() == {
        "bare": {"ok"},
        ALIAS: {"ok"},
    }
    assert sorted(run.trials["trial_id"]) == sorted(set(run.trials["trial_id"]))
    overhead = analysis.overhead_table(run).set_index("runtime")
    assert list(overhead.index) == ["bare", ALIAS]  # the registry's order
    assert overhead.loc["bare", "verdict"] == "baseline"
    assert overhead.loc[ALIAS, "verdict"] in ("same", "slower", "faster", "undecided")
    assert 0.5 < overhead.loc[ALIAS, "ratio"] < 2.0  # the same machine, the same work
    # Like bare metal it has no processes of its own: nothing to put in the footprint.
    assert analysis.footprint_table(run).empty

    written = build_report([run], tmp_path / "report", {"html", "md", "json"})
    by_name = {path.name: path for path in written}
    md = by_name["report.md"].read_text()
    assert re.search(rf"^\| {ALIAS} \| cpu \| 3 \| ", md, re.MULTILINE), md
    html = by_name["index.html"].read_text()
    assert f"<td>{ALIAS}</td>" in html
    assert ALIAS_COLOUR in html  # its bars and lines in its own colour
    report = json.loads(by_name["report.json"].read_text())
    assert ALIAS in {row["runtime"] for row in report["runs"][0]["overhead"]}
    assert ALIAS in by_name[f"pytest-benchmark-{run.run_id}.json"].read_text()

    print_run_summary(outcome.run_dir, outcome.skipped_runtimes)
    assert re.search(rf"│ {ALIAS}\s+│ cpu\s+│\s+3 │", capsys.readouterr().out)

    checks = {check.name: check for check in run_doctor().runtimes}
    assert list(checks)[:2] == ["bare", ALIAS]
    assert checks[ALIAS].available and checks[ALIAS].version == checks["bare"].version
    assert checks[ALIAS].default_oci_runtime == ""
