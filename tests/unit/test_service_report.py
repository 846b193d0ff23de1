"""The service table in every format: one row builder, a saturated client flagged in each."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bench import analysis
from bench.report import build_report
from bench.report.markdown import SERVICE_TITLE
from bench.summary import print_run_summary
from tests.storegen import ServiceCase, StoreSpec, write_store

CASE = ServiceCase(
    latency_factor={"docker/published": 1.6},
    saturated=("docker/host",),
    helper_cpu_s={"docker/published": 0.4},
)
SPEC = StoreSpec(run_id="svc", runtimes=(), workloads=(), repetitions=4, services=(CASE,))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(tmp_path_factory.mktemp("results"), SPEC)


@pytest.fixture(scope="module")
def report(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    build_report([analysis.load_run(store)], out, {"html", "md", "json"})
    return out


def _expected(store: Path) -> dict[str, float]:
    """p99 in ms per label, as the pandas API computes it."""
    table = analysis.service_table(analysis.load_run(store))
    return {str(r.runtime): float(r.latency_p99_s) * 1e3 for r in table.itertuples()}


def test_markdown(store: Path, report: Path) -> None:
    md = (report / "report.md").read_text()
    section = md.split(f"## {SERVICE_TITLE}\n", 1)[1].split("\n## ", 1)[0]
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ") for line in section.splitlines()[3:]
    }
    assert list(rows) == list(CASE.paths)
    for label, p99_ms in _expected(store).items():
        assert rows[label][7] == format(p99_ms, ".4g")
    assert rows["docker/published"][9].startswith("**")  # p99 significantly above bare's
    assert not rows["docker/host"][9].startswith("**")
    assert "**yes (4 of 4)**" in rows["docker/host"][-1]
    assert rows["bare/host"][-1].startswith("no")
    assert "**client-saturated**: docker/host http-get" in md


def test_html_table_plot_and_warning(report: Path) -> None:
    text = (report / "index.html").read_text()
    root = ET.fromstring(text)
    (heading,) = [el for el in root.iter("h3") if el.text == SERVICE_TITLE]
    (section,) = root.iter("section")
    children = list(section)
    table = children[children.index(heading) + 1].find("table")
    assert table is not None
    saturated = [td for td in table.iter("td") if (td.text or "").startswith("yes (")]
    assert [td.get("class") for td in saturated] == ["harmed"]
    figure = children[children.index(heading) + 2]
    assert figure.tag == "figure" and "http-get: latency percentiles" in ET.tostring(
        figure, encoding="unicode"
    )
    assert "client-saturated" in text


def test_json(store: Path, report: Path) -> None:
    run = json.loads((report / "report.json").read_text())["runs"][0]
    services = {r["runtime"]: r for r in run["services"]}
    for label, p99_ms in _expected(store).items():
        assert services[label]["latency_p99_s"] * 1e3 == pytest.approx(p99_ms)
    assert services["docker/host"]["client_saturated"] == SPEC.repetitions
    assert services["bare/host"]["p99_ratio"] == 1.0
    saturated = [w for w in run["warnings"] if w["kind"] == "client-saturated"]
    assert [w["runtime"] for w in saturated] == ["docker/host"]


def test_terminal_summary(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    print_run_summary(store, {})
    out = capsys.readouterr().out
    section = out.split(SERVICE_TITLE, 1)[1]
    for label, p99_ms in _expected(store).items():
        assert re.search(
            rf"{re.escape(label)}\s+│.*│\s+{re.escape(format(p99_ms, '.4g'))}\s+│", section
        )
    assert re.search(r"docker/host .*yes \(4 of 4\)", section)
    assert "warning: docker/host http-get: the load generator's CPU was saturated" in out


def test_no_service_section_without_service_trials(tmp_path: Path) -> None:
    run = analysis.load_run(write_store(tmp_path, StoreSpec(repetitions=3)))
    build_report([run], tmp_path / "out", {"md"})
    assert SERVICE_TITLE not in (tmp_path / "out" / "report.md").read_text()


def test_sweep_curve_in_html(tmp_path: Path) -> None:
    cases = tuple(ServiceCase(offered_rate_per_s=rate) for rate in (1000.0, 5000.0))
    spec = StoreSpec(runtimes=(), workloads=(), repetitions=3, services=cases)
    run = analysis.load_run(write_store(tmp_path, spec))
    build_report([run], tmp_path / "out", {"html"})
    text = (tmp_path / "out" / "index.html").read_text()
    assert "http-get: throughput-latency" in text
    assert "Rate sweeps: one point per offered rate" in text
    # A store without sweeps has no such figure.
    assert "throughput-latency" not in (report_of(tmp_path, SPEC) / "index.html").read_text()


def report_of(tmp_path: Path, spec: StoreSpec) -> Path:
    out = tmp_path / f"out-{spec.run_id}"
    build_report([analysis.load_run(write_store(tmp_path, spec))], out, {"html"})
    return out
