"""Debian's Python 3 in the workload image: the interpreter, its standard library, and the
Debian-packaged libraries a server of bench's own imports (the same bytes as on the host)."""

from __future__ import annotations

from pathlib import Path

PYTHON = Path("/usr/bin/python3.11")
PYTHON_PACKAGE = "python3.11"
STDLIB = Path("/usr/lib/python3.11")
DYNLOAD = STDLIB / "lib-dynload"
DIST_PACKAGES = Path("/usr/lib/python3/dist-packages")
# What a server never imports: the static library for embedding (25 MB of the 54), the test
# support, GUI and packaging tools; extension modules come in as binaries (with their
# libraries), bytecode caches never (they depend on what ran on the host before).
_STDLIB_SKIP = frozenset(
    {
        "__pycache__", "config-3.11-x86_64-linux-gnu", "test", "idlelib", "tkinter",
        "turtledemo", "lib2to3", "ensurepip", "pydoc_data", "distutils", "lib-dynload",
        "site-packages", "dist-packages",
    }
)  # fmt: skip
# Python run in the image: isolated (no environment, no user site), no bytecode written
# (the root file system is read-only in every container runtime).
PYTHON_ARGV = (str(PYTHON), "-I", "-B")


def python_binaries() -> tuple[Path, ...]:
    """The interpreter and its extension modules (the image adds each one's libraries)."""
    return (PYTHON, *sorted(DYNLOAD.glob("*.so")))


def python_data_paths(packages: tuple[str, ...]) -> tuple[Path, ...]:
    """The standard library (less what a server never imports) and `packages` from
    dist-packages (Debian's python3-* packages), as files and directories to copy."""
    if not STDLIB.is_dir():  # reported as missing, with the package that provides it
        return (STDLIB, *(DIST_PACKAGES / name for name in packages))
    stdlib = sorted(p for p in STDLIB.iterdir() if p.name not in _STDLIB_SKIP)
    return (*stdlib, *(DIST_PACKAGES / name for name in packages))
