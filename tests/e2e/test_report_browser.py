"""The HTML report of a real run, opened in headless Chromium: no errors, the plots render."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from bench.report.markdown import FOOTPRINT_TITLE
from bench.runtimes.registry import entry
from tests.browser import WINDOW, SvgCounter, console_problems, longest_run, run_chromium
from tests.helpers import RealRun, bench

# Each runtime's colour in the report (its registry entry's "#rrggbb") as 0-255 RGB.
RUNTIME_RGB = {name: tuple(bytes.fromhex(entry(name).colour[1:])) for name in ("bare", "docker")}


@pytest.fixture(scope="module")
def report_page(real_run: RealRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench-e2e-report")
    done = bench("report", str(real_run.run_dir), "--out", str(out), "--format", "html")
    assert done.returncode == 0, done.stderr
    return out / "index.html"


def test_console_check_catches_a_script_error(tmp_path: Path) -> None:
    """The log pattern the report test relies on does see console errors (so it can fail)."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><p>x</p><script>console.error("bad");undefinedCall()</script>')
    done = run_chromium(page, tmp_path / "profile", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    problems = console_problems(done.stderr)
    assert any('"bad"' in p for p in problems), done.stderr[-2000:]
    assert any("Uncaught ReferenceError" in p for p in problems)


def test_dom_has_rendered_plots(real_run: RealRun, report_page: Path, tmp_path: Path) -> None:
    done = run_chromium(report_page, tmp_path / "profile", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert console_problems(done.stderr) == []
    dom = done.stdout
    assert f"bench report: {real_run.run_id}" in dom
    headings = ("Host and versions", "Overhead vs bare metal", "Start and stop latency")
    for heading in (*headings, FOOTPRINT_TITLE):
        assert heading in dom
    for runtime in real_run.runtimes:
        assert f"<td>{runtime}</td>" in dom

    counter = SvgCounter()
    counter.feed(dom)
    assert counter.external == []  # self-contained: works offline
    # overhead bars, latency boxes, CPU/memory over time: each with axes, bars or lines
    assert len(counter.svgs) >= 3, counter.svgs
    for svg in counter.svgs:
        assert svg["paths"] >= 5 and svg["d_chars"] >= 500 and svg["texts"] >= 3, svg
    # Axis labels with units are part of the plots, as text (svg.fonttype none).
    for label in ("CPU (cores)", "memory (MiB)", "latency (ms", "time since trial start (s)"):
        assert label in dom


def test_screenshot_shows_the_plots(real_run: RealRun, report_page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    done = run_chromium(report_page, tmp_path / "profile", f"--screenshot={shot}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert console_problems(done.stderr) == []
    assert shot.stat().st_size > 10_000
    pixels = np.asarray(imread(shot))[..., :3]
    if pixels.dtype != np.uint8:  # imread gives floats 0..1 for PNG
        pixels = np.rint(pixels * 255).astype(np.uint8)
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    non_white = np.any(pixels < 245, axis=-1)
    assert 0.01 < non_white.mean() < 0.6, non_white.mean()  # neither blank nor a solid fill
    packed = (pixels.astype(np.uint32) * np.array([1 << 16, 1 << 8, 1], np.uint32)).sum(axis=-1)
    assert np.unique(packed).size > 50  # antialiased text and lines, not a flat page
    # Each runtime's bar is painted in its colour: a horizontal run of that colour wider
    # than any anti-aliased text stroke could make.
    for runtime in real_run.runtimes:
        rgb = np.array(RUNTIME_RGB[runtime])
        near = np.all(np.abs(pixels.astype(int) - rgb) <= 6, axis=-1)
        assert longest_run(near) >= 30, f"no solid {runtime}-coloured area on the page"
