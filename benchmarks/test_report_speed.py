"""Report build time on a large synthetic store: 1 h of 10 Hz samples x 4 runtimes.

Opt-in (outside testpaths, marked slow); run with
`.venv/bin/pytest benchmarks/test_report_speed.py --benchmark-enable -s`.
"""

from __future__ import annotations

import time

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from bench import analysis
from bench.report import build_report
from tests.storegen import StoreSpec, write_store

pytestmark = pytest.mark.slow

MAX_SECONDS = 10.0
MAX_HTML_BYTES = 5 * 1024 * 1024


def test_report_speed_one_hour_four_runtimes(
    benchmark: BenchmarkFixture, tmp_path_factory: pytest.TempPathFactory
) -> None:
    spec = StoreSpec(
        run_id="bench-big",
        workloads=("cpu",),
        repetitions=1,
        warmups=0,
        trial_duration_s=3600.0,
        sample_hz=10.0,
    )
    run_dir = write_store(tmp_path_factory.mktemp("results"), spec)
    out_dir = tmp_path_factory.mktemp("report")
    samples = len(analysis.load_run(run_dir).samples)
    assert samples == 4 * 36_000

    def build() -> float:
        start = time.perf_counter()
        run = analysis.load_run(run_dir)  # loading is part of what `bench report` does
        build_report([run], out_dir, {"html", "md", "json"})
        return time.perf_counter() - start

    elapsed = benchmark.pedantic(build, rounds=1, iterations=1)
    size = (out_dir / "index.html").stat().st_size
    print(f"\n{samples} samples: report built in {elapsed:.2f} s, index.html {size / 1024:.0f} KiB")
    benchmark.extra_info.update(seconds=elapsed, html_bytes=size, samples=samples)
    assert elapsed < MAX_SECONDS
    assert size < MAX_HTML_BYTES
