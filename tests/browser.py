"""Headless Chromium for the HTML pages' tests: run it on a local file, read its console,
count what the SVG plots draw."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from tests.helpers import require

BROWSER_TIMEOUT_S = 60
WINDOW = (1400, 3200)  # px: tall enough to hold the tables and every plot of a small run
# The report has no scripts: any console line, error or not, means something went wrong.
CONSOLE = re.compile(r":CONSOLE[:(\d]|Uncaught|Refused to|Failed to load resource")


def chromium_path() -> str:
    path = shutil.which("chromium")
    require(path is not None, "chromium is not installed (scripts/install-host-deps.sh)")
    assert path is not None
    return path


def run_chromium(page: Path, profile: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on a local file, isolated profile, no network chatter."""
    argv = [
        chromium_path(),
        "--headless",
        "--no-sandbox",  # root in a VM: the setuid sandbox is unavailable
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--hide-scrollbars",
        *mode,
        page.as_uri(),
    ]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=False
    )


def console_problems(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


class SvgCounter(HTMLParser):
    """Per top-level <svg>: how many drawn <path> elements and their total 'd' length."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.svgs: list[dict[str, int]] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href", "xlink:href"):
            ref = values.get(name)
            if ref and not ref.startswith(("#", "data:")):
                self.external.append(f"<{tag} {name}={ref}>")
        if tag == "svg":
            if self.depth == 0:
                self.svgs.append({"paths": 0, "d_chars": 0, "texts": 0})
            self.depth += 1
        elif self.depth and tag == "path":
            self.svgs[-1]["paths"] += 1
            self.svgs[-1]["d_chars"] += len(values.get("d") or "")
        elif self.depth and tag == "text":
            self.svgs[-1]["texts"] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self.depth -= 1


def longest_run(mask: np.ndarray) -> int:
    """Longest run of True along any row of a 2-D mask."""
    best = 0
    for row in mask[mask.any(axis=1)]:
        edges = np.diff(np.concatenate(([0], row.astype(np.int8), [0])))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        best = max(best, int((ends - starts).max()))
    return best
