"""The project's own standards, enforced by the test command: ruff and mypy --strict."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.fail(f"{name} is not installed (pip install -e '.[dev]')")
        return found
    return str(path)


@pytest.mark.parametrize(
    "argv",
    [
        ["ruff", "check", "bench", "tests", "benchmarks", "noxfile.py"],
        ["ruff", "format", "--check", "bench", "tests", "benchmarks", "noxfile.py"],
        ["mypy", "--strict", "bench"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_code_passes(argv: list[str]) -> None:
    done = subprocess.run(
        [tool(argv[0]), *argv[1:]], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
