"""The per-tier table of multi-tier services in every format: one row builder, each tier's
own CPU during the load per 1,000 of the front's requests, an injected cost found."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from bench import analysis
from bench.report import build_report
from bench.report.markdown import TIER_TITLE, tier_rows
from bench.summary import print_run_summary
from tests.storegen import MiB, ServiceCase, StoreSpec, write_store

# The db tier under docker's bridge costs 1.5x its bare-metal CPU per request.
CASE = ServiceCase(
    workload="db",
    paths=("bare/host", "docker/bridge"),
    front_tier="app",
    back_tiers={"db": 60e-6, "cache": 5e-6},
    tier_cpu_factor={("db", "docker/bridge"): 1.5},
    tier_mem_peak_bytes=30 * MiB,
)
SPEC = StoreSpec(run_id="tiers", runtimes=(), workloads=(), repetitions=4, services=(CASE,))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(tmp_path_factory.mktemp("results"), SPEC)


@pytest.fixture(scope="module")
def table(store: Path) -> pd.DataFrame:
    return analysis.tier_table(analysis.load_run(store))


@pytest.fixture(scope="module")
def report(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    build_report([analysis.load_run(store)], out, {"html", "md", "json"})
    return out


def test_each_tier_has_its_own_cpu_per_request_in_start_order(table: pd.DataFrame) -> None:
    assert [(r.tier, r.runtime) for r in table.itertuples()] == [
        (tier, label) for tier in ("db", "cache", "app") for label in CASE.paths
    ]
    assert set(table["n"]) == {SPEC.repetitions}  # the warm-up is not counted
    per_1k = {(r.tier, r.runtime): r.cpu_s_per_1k_requests for r in table.itertuples()}
    # Injected: CPU-seconds per request x 1,000, within the 2 % noise of four repetitions.
    expected = {
        ("db", "bare/host"): 0.060,
        ("db", "docker/bridge"): 0.090,
        ("cache", "bare/host"): 0.005,
        ("app", "bare/host"): CASE.server_cpu_s_per_request * 1e3,
    }
    for key, value in expected.items():
        assert per_1k[key] == pytest.approx(value, rel=0.05), key
    db = table[(table["tier"] == "db") & (table["runtime"] == "bare/host")].iloc[0]
    assert db.load_cpu_s_low <= db.load_cpu_s <= db.load_cpu_s_high
    assert db.load_cpu_s == pytest.approx(CASE.requests * 60e-6, rel=0.05)
    assert db.mem_peak_bytes == 30 * MiB


def test_markdown_html_json_and_terminal_show_the_same_rows(
    store: Path, table: pd.DataFrame, report: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    headers, rows = tier_rows(table)
    md = (report / "report.md").read_text()
    section = md.split(f"## {TIER_TITLE}\n", 1)[1].split("\n## ", 1)[0]
    md_rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in section.strip().splitlines()[2:]
    ]
    assert md_rows == rows
    root = ET.fromstring((report / "index.html").read_text())
    (heading,) = [el for el in root.iter("h3") if el.text == TIER_TITLE]
    (section_el,) = root.iter("section")
    children = list(section_el)
    html_table = children[children.index(heading) + 1].find("table")
    assert html_table is not None
    html_rows = [[td.text or "" for td in tr.iter("td")] for tr in html_table.iter("tr")]
    assert [r for r in html_rows if r] == rows
    figure = children[children.index(heading) + 2]
    svg = ET.tostring(figure, encoding="unicode")
    assert figure.tag == "figure" and "db: each tier" in svg
    records = json.loads((report / "report.json").read_text())["runs"][0]["tiers"]
    keys = list(zip(table.tier, table.runtime, strict=True))
    assert [(r["tier"], r["runtime"]) for r in records] == keys
    assert [r["cpu_s_per_1k_requests"] for r in records] == pytest.approx(
        list(table.cpu_s_per_1k_requests)
    )
    print_run_summary(store, {})
    out = capsys.readouterr().out.split(TIER_TITLE, 1)[1]
    for row in rows:
        assert all(cell in out for cell in row), row
    assert "CPU-s/1k req" in headers


def test_no_tier_section_for_single_servers_or_stores_from_before_tiers(tmp_path: Path) -> None:
    spec = StoreSpec(runtimes=(), workloads=(), repetitions=2, services=(ServiceCase(),))
    run = analysis.load_run(write_store(tmp_path / "single", spec))
    assert analysis.tier_table(run).empty
    build_report([run], tmp_path / "out", {"md"})
    assert TIER_TITLE not in (tmp_path / "out" / "report.md").read_text()
    old = StoreSpec(
        runtimes=(), workloads=(), repetitions=2, services=(CASE,), omit_columns=("tier",)
    )
    assert analysis.tier_table(analysis.load_run(write_store(tmp_path / "old", old))).empty


def test_the_overhead_table_counts_each_step_once_by_its_front(store: Path) -> None:
    # The back tiers have no client: the step's requests/s is the front's row alone.
    table = analysis.overhead_table(analysis.load_run(store))
    assert list(table["runtime"]) == list(CASE.paths)
    assert set(table["metric"]) == {"throughput"}
    assert set(table["n"]) == {SPEC.repetitions}
    assert table["verdict"].iloc[1] != "undecided"  # 4 against 4 can reach p < 0.05


def test_history_reads_the_same_rows_as_the_overhead_table(store: Path) -> None:
    from bench.frames import load_solo_trials

    solo = load_solo_trials([("tiers", store)], ["cpu_s"])
    assert set(solo["tier"]) == {CASE.front_tier}
    assert len(solo) == len(CASE.paths) * SPEC.repetitions
