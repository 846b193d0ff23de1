"""Reports from synthetic stores: HTML well-formed and offline, Markdown, JSON and exports."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bench import analysis
from bench.errors import InputError
from bench.report import build_report
from bench.report.jsonout import pytest_benchmark_stats
from bench.report.markdown import FOOTPRINT_TITLE
from bench.summary import print_run_summary
from tests.helpers import pytest_benchmark_compare
from tests.storegen import IsolationCase, StoreSpec, write_store


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[analysis.Run]:
    root = tmp_path_factory.mktemp("results")
    first = StoreSpec(
        run_id="run-one",
        throughput_factor={"docker": 0.93},
        isolation=(
            IsolationCase(degradation={"docker": 0.25}),
            IsolationCase(kind="memory", aggressor_oom=True),
        ),
        failed=1,
        noise=0.02,
    )
    second = StoreSpec(run_id="run-two", seed=5, host_load_before=4.0)
    return [
        analysis.load_run(write_store(root, first)),
        analysis.load_run(write_store(root, second)),
    ]


@pytest.fixture(scope="module")
def single(runs: list[analysis.Run], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    written = build_report(runs[:1], out, {"html", "md", "json"})
    assert {p.name for p in written} == {
        "index.html",
        "report.md",
        "report.json",
        "pytest-benchmark-run-one.json",
        "github-action-benchmark-bigger-run-one.json",
        "github-action-benchmark-smaller-run-one.json",
    }
    return out


def test_html_is_well_formed_self_contained(single: Path) -> None:
    text = (single / "index.html").read_text()
    root = ET.fromstring(text)  # the document is also well-formed XML
    assert root.tag == "html"
    svgs = [el for el in root.iter() if el.tag.endswith("svg")]
    # overhead, isolation, latency, and one over-time plot per workload (cpu, vm)
    assert len(svgs) >= 5
    assert "<svg" in text
    # Offline: nothing loaded from the network (xmlns URIs inside SVG are names, not loads).
    assert not re.search(
        r"""<(script|link|img|iframe)\b[^>]*(src|href)\s*=\s*["']https?://""", text
    )
    assert not re.search(r"""(src|href)\s*=\s*["']https?://""", text)
    assert "<script" not in text
    assert "@import" not in text and "url(http" not in text
    assert "docker" in text and "run-one" in text
    assert "slower" in text  # the injected 7 % docker slowdown is called
    assert "memory" in text and "harmed" in text


def test_markdown(single: Path) -> None:
    md = (single / "report.md").read_text()
    assert md.startswith("# bench report: `run-one`")
    for heading in (
        "## Host and versions",
        "## Overhead vs bare metal",
        "## Isolation",
        "## Warnings",
    ):
        assert heading in md
    docker_cpu = next(line for line in md.splitlines() if line.startswith("| docker | cpu |"))
    assert docker_cpu.endswith("| slower |")
    assert "failed-trials" in md


def test_report_json(single: Path) -> None:
    data = json.loads((single / "report.json").read_text())
    run = data["runs"][0]
    assert run["run_id"] == "run-one"
    assert run["manifest"]["host"]["cpus"] == 2
    row = next(r for r in run["overhead"] if r["runtime"] == "docker" and r["workload"] == "cpu")
    assert row["verdict"] == "slower" and row["ratio_low"] <= row["ratio"] <= row["ratio_high"] < 1
    assert next(r for r in run["overhead"] if r["runtime"] == "bare")["p_value"] is None
    harmed = [r for r in run["isolation"] if r["victim_harmed"]]
    assert [(r["runtime"], r["kind"]) for r in harmed] == [("docker", "cpu")]
    assert {w["kind"] for w in run["warnings"]} >= {"failed-trials"}


# storegen gives every runtime but bare 40 MiB RSS and 30 MiB PSS of its own processes.
FOOTPRINT_ROWS = {"docker": ("40.0", "30.0"), "podman": ("40.0", "30.0"), "lxc": ("40.0", "30.0")}


def test_footprint_table_in_markdown(single: Path) -> None:
    md = (single / "report.md").read_text()
    section = md.split(f"## {FOOTPRINT_TITLE}\n", 1)[1].split("\n## ", 1)[0]
    rows = {line.split(" | ")[0].strip("| "): line for line in section.splitlines()[3:] if line}
    # Bare metal has no processes of its own to measure: no row, rather than a zero.
    assert set(rows) == set(FOOTPRINT_ROWS)
    for runtime, (rss, pss) in FOOTPRINT_ROWS.items():
        assert rows[runtime].startswith(f"| {runtime} | {rss} | {pss} |")


def test_footprint_table_in_html(single: Path) -> None:
    root = ET.fromstring((single / "index.html").read_text())
    headings = [el for el in root.iter("h3") if el.text == FOOTPRINT_TITLE]
    assert len(headings) == 1
    (section,) = root.iter("section")
    children = list(section)
    table = children[children.index(headings[0]) + 1].find("table")
    assert table is not None
    cells = [[td.text for td in tr.iter("td")] for tr in table.iter("tr")][1:]
    assert {row[0]: (row[1], row[2]) for row in cells} == FOOTPRINT_ROWS


def test_footprint_table_in_json(single: Path) -> None:
    footprint = json.loads((single / "report.json").read_text())["runs"][0]["footprint"]
    assert {r["runtime"]: (r["runtime_rss_bytes"], r["runtime_pss_bytes"]) for r in footprint} == {
        name: (float(rss) * 2**20, float(pss) * 2**20)
        for name, (rss, pss) in FOOTPRINT_ROWS.items()
    }


def test_footprint_table_in_terminal_summary(
    runs: list[analysis.Run], capsys: pytest.CaptureFixture[str]
) -> None:
    print_run_summary(runs[0].path, {})
    out = capsys.readouterr().out
    assert FOOTPRINT_TITLE in out
    section = out.split(FOOTPRINT_TITLE, 1)[1]
    for runtime, (rss, pss) in FOOTPRINT_ROWS.items():
        assert re.search(rf"{runtime}\s+│\s+{rss}\s+│\s+{pss}\s+│", section), runtime
    assert not re.search(r"│ bare\s", section)


def test_pytest_benchmark_compare_accepts_export(single: Path) -> None:
    export = single / "pytest-benchmark-run-one.json"
    data = json.loads(export.read_text())
    assert {"machine_info", "commit_info", "benchmarks", "datetime", "version"} <= set(data)
    stdout = pytest_benchmark_compare([str(export)], single)
    assert "wall_s[docker-cpu]" in stdout
    assert "start_s[lxc-vm]" in stdout


def test_pytest_benchmark_compare_two_runs(runs: list[analysis.Run], tmp_path: Path) -> None:
    build_report(runs, tmp_path, {"json"})
    files = sorted(str(p) for p in tmp_path.glob("pytest-benchmark-*.json"))
    assert len(files) == 2
    stdout = pytest_benchmark_compare([*files, "--group-by", "name"], tmp_path)
    assert stdout.count("wall_s[docker-cpu]") >= 2


def test_pytest_benchmark_stats_match_pytest_benchmark() -> None:
    from pytest_benchmark.stats import Stats

    values = [3.0, 1.0, 2.0, 10.0, 2.5, 2.2, 1.9]
    for n in (1, 2, 5, 6, 7):
        reference = Stats()
        for v in values[:n]:
            reference.update(v)
        ours = pytest_benchmark_stats(values[:n])
        for key, expected in reference.as_dict().items():
            assert (
                ours[key] == pytest.approx(expected)
                if isinstance(expected, float)
                else ours[key] == expected
            ), key


def test_github_action_benchmark_export(single: Path) -> None:
    bigger = json.loads((single / "github-action-benchmark-bigger-run-one.json").read_text())
    smaller = json.loads((single / "github-action-benchmark-smaller-run-one.json").read_text())
    for entries in (bigger, smaller):
        assert entries
        for e in entries:
            assert set(e) == {"name", "unit", "value", "range", "extra"}
            assert isinstance(e["value"], float) and e["range"].startswith("± ")
    assert {e["name"] for e in bigger} >= {"docker/cpu throughput", "bare/vm throughput"}
    start = next(e for e in smaller if e["name"] == "lxc/cpu start_s")
    assert start["unit"] == "ms" and 500 < start["value"] < 700


def test_side_by_side(runs: list[analysis.Run], tmp_path: Path) -> None:
    written = build_report(runs, tmp_path, {"html", "md"})
    html = written[0].read_text()
    ET.fromstring(html)
    assert "run-one" in html and "run-two" in html
    assert "repeat(2," in html  # two columns
    md = written[1].read_text()
    assert "| runtime | workload | run-one | run-two |" in md
    assert "host-busy" in md  # run-two's load average 4.0 on 2 CPUs


def test_bad_formats(runs: list[analysis.Run], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="pdf"):
        build_report(runs, tmp_path, {"pdf"})
    with pytest.raises(InputError):
        build_report([], tmp_path, {"md"})
