"""Developer sessions: tests, lint, typecheck, and the opt-in benchmarks."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "venv"


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """The whole test suite (needs root and the runtimes for the integration tests)."""
    session.run("python", "-m", "pytest", "tests", *session.posargs)


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    session.run("ruff", "check", "bench", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "bench", "tests", "noxfile.py")


@nox.session(python=False)
def typecheck(session: nox.Session) -> None:
    session.run("mypy", "--strict", "bench")


@nox.session(python=False)
def benchmarks(session: nox.Session) -> None:
    """pytest-benchmark suite; results saved under .benchmarks/ for comparison."""
    session.run(
        "python", "-m", "pytest", "benchmarks", "--benchmark-enable", "--benchmark-autosave",
        "--benchmark-columns=min,median,mean,max,rounds", *session.posargs,
    )  # fmt: skip
