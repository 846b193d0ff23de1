"""The project's own standards, enforced by the test command: ruff, mypy --strict, comments."""

from __future__ import annotations

import ast
import io
import re
import shutil
import subprocess
import sys
import tokenize
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


# Design notes live in docs/; a comment naming a file or issue outside the repository
# sends the reader somewhere they cannot follow.
OUTSIDE_REPO = re.compile(
    r"HOST-NOTES|\bDESIGN\b|\bnotes/|(?i:\bissue #?\d+)"
    r"|(?:\.\./|/)shared/|\bshared/[\w./-]+\.(?:md|sh|py|txt)\b|\bshared/recipes"
)
# Files of the repository a comment names (docs, tests, benchmarks) must exist.
DOCS_REF = re.compile(r"\b(?:docs|tests|benchmarks)/[\w./-]*\w")


def comments_and_docstrings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every comment and docstring in one Python file."""
    source = path.read_text()
    found = [
        (token.start[0], token.string)
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            docstring = ast.get_docstring(node, clean=False)
            if docstring is not None:
                found.append((node.body[0].lineno, docstring))
    return found


def test_comments_point_only_into_the_repository() -> None:
    wrong = []
    paths = [
        path
        for folder in ("bench", "tests", "benchmarks")
        for path in (REPO / folder).rglob("*.py")
    ]
    for path in sorted(paths):
        for first_line, text in comments_and_docstrings(path):
            for m in OUTSIDE_REPO.finditer(text):
                line = first_line + text.count("\n", 0, m.start())
                wrong.append(f"{path.relative_to(REPO)}:{line}: {m.group()!r}")
            for m in DOCS_REF.finditer(text):
                if not (REPO / m.group()).exists():
                    line = first_line + text.count("\n", 0, m.start())
                    wrong.append(f"{path.relative_to(REPO)}:{line}: {m.group()} does not exist")
    assert not wrong, "point these at docs/architecture.md or docs/host-notes.md:\n" + "\n".join(
        wrong
    )


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("# see HOST-NOTES", True),
        ('"""DESIGN.md "Result store"."""', True),
        ("# measured in issue 7", True),
        ("# see ../shared/recipes", True),
        ("# see notes/CONTAINERS.md", True),
        ("# see docs/host-notes.md", False),
        ("# see shared/HOST-NOTES.md", True),
        ("# adapted from ../shared/x", True),
        ('"""placements shared/separate are pinned"""', False),
        ("# the OCI runtime is per service", False),
    ],
)
def test_outside_pattern(text: str, bad: bool) -> None:
    assert bool(OUTSIDE_REPO.search(text)) is bad


def imported_test_modules(source: str) -> list[str]:
    """Modules under tests/ that `source` imports and that are test modules or conftests."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return [
        name
        for name in dict.fromkeys(names)
        if name.split(".")[0] == "tests"
        and any(part == "conftest" or part.startswith("test_") for part in name.split(".")[1:])
    ]


def test_no_test_imports_another_test_module() -> None:
    """Shared code lives in helper modules (tests/helpers.py, tests/storegen.py, ...).

    Importing a test module runs its module-level code and can collect its tests twice;
    importing a conftest bypasses pytest's own fixture loading.
    """
    wrong = {
        str(path.relative_to(REPO)): found
        for folder in ("tests", "benchmarks")
        for path in sorted((REPO / folder).rglob("*.py"))
        if (found := imported_test_modules(path.read_text()))
    }
    assert not wrong, wrong


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("from tests.conftest import require", True),
        ("from tests.integration import test_bare", True),
        ("import tests.e2e.conftest", True),
        ("from tests.helpers import require", False),
        ("from tests.e2e import reliability as rel", False),
    ],
)
def test_imported_test_modules(source: str, bad: bool) -> None:
    assert bool(imported_test_modules(source)) is bad


def runtime_names_used(source: str, names: tuple[str, ...]) -> list[int]:
    """Lines where a string literal is exactly a runtime's name (a decision by name)."""
    return sorted(
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and node.value in names
    )


def test_nothing_outside_the_runtimes_names_a_runtime() -> None:
    """What differs between runtimes is asked of the registry, never decided by name."""
    from bench.runtimes.registry import names

    runtimes_dir = REPO / "bench" / "runtimes"
    wrong = {
        str(path.relative_to(REPO)): lines
        for path in sorted((REPO / "bench").rglob("*.py"))
        if runtimes_dir not in path.parents
        if (lines := runtime_names_used(path.read_text(), names()))
    }
    assert not wrong, wrong


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ('if runtime != "bare":\n    pass\n', True),
        ('ENGINES = ("docker", "podman")\n', True),
        ('"""Runs on bare metal."""\ntitle = "bare metal"\n', False),
        ("if entry(name).capabilities.needs_image:\n    pass\n", False),
    ],
)
def test_runtime_names_used(source: str, bad: bool) -> None:
    assert bool(runtime_names_used(source, ("bare", "docker", "podman", "lxc"))) is bad


def test_docs_name_only_files_that_exist() -> None:
    """A module or test the design notes name (`runner.py`, `tests/helpers.py`) exists."""
    files = {
        str(path.relative_to(REPO))
        for folder in ("bench", "tests", "benchmarks")
        for path in (REPO / folder).rglob("*.py")
    }
    missing = [
        f"{doc.name}: {name}"
        for doc in sorted((REPO / "docs").glob("*.md"))
        for name in re.findall(r"`([\w/.-]+\.py)", doc.read_text())
        if not any(file == name or file.endswith(f"/{name}") for file in files)
    ]
    assert not missing, missing
