"""reports/compare-runtimes.ipynb executed top to bottom (nbclient) on a real run."""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread

from tests.helpers import REPO, RealRun, require

NOTEBOOK = REPO / "reports" / "compare-runtimes.ipynb"
CELL_TIMEOUT_S = 120


def execute(cwd: Path) -> Any:
    """Run every cell in a fresh python3 kernel started in `cwd`; return the notebook."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        spec = None
    require(
        spec is not None,
        "no python3 Jupyter kernel: `.venv/bin/python -m ipykernel install --sys-prefix`",
    )
    assert spec is not None
    # "python" in the spec means "the interpreter running jupyter_client", i.e. the venv.
    require(
        spec.argv[0] in ("python", "python3", sys.executable),
        f"the python3 kernel runs {spec.argv[0]}, not this venv's interpreter",
    )
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()  # raises CellExecutionError with the cell and traceback on any error
    return nb


def outputs(nb: Any) -> list[dict[str, Any]]:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]


def text_of(nb: Any) -> str:
    parts = []
    for o in outputs(nb):
        parts.append(o.get("text", ""))
        data = o.get("data", {})
        parts.append(data.get("text/html", "") + data.get("text/plain", ""))
    return "\n".join(parts)


def test_notebook_runs_on_bench_run_dir(real_run: RealRun, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_RUN_DIR", str(real_run.run_dir))
    nb = execute(NOTEBOOK.parent)
    text = text_of(nb)
    assert f"run {real_run.run_id} (complete)" in text
    for runtime in real_run.runtimes:
        assert f"<td>{runtime}</td>" in text  # trials and overhead tables, as HTML
    assert "baseline" in text  # overhead verdict of bare
    assert "no isolation trials in this run" in text  # the tiny scenario has no aggressors

    (png,) = [o["data"]["image/png"] for o in outputs(nb) if "image/png" in o.get("data", {})]
    pixels = imread(io.BytesIO(base64.b64decode(png)), format="png")[..., :3]
    assert pixels.shape[0] > 200 and pixels.shape[1] > 600
    assert 0.02 < float(np.any(pixels < 0.95, axis=-1).mean()) < 0.6  # drawn, not blank


def test_notebook_defaults_to_newest_run(
    real_run: RealRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without BENCH_RUN_DIR it finds results/<newest>/ from its folder or a parent."""
    monkeypatch.delenv("BENCH_RUN_DIR", raising=False)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / real_run.run_id).symlink_to(real_run.run_dir)
    (tmp_path / "reports").mkdir()
    nb = execute(tmp_path / "reports")
    assert f"run {real_run.run_id} (complete)" in text_of(nb)
