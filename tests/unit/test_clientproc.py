"""The measured child: exit code, rusage CPU time, and the kill past its time limit."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.clientproc import run_child


def test_exit_code_output_and_cpu_time(tmp_path: Path) -> None:
    spin = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    argv = [sys.executable, "-c", spin + "print('done'); raise SystemExit(3)"]
    run = run_child(argv, tmp_path / "out.txt", kill_after_s=30)
    assert run.exit_code == 3 and not run.killed
    assert (tmp_path / "out.txt").read_text() == "done\n"
    assert 0.3 <= run.cpu_s < run.wall_s + 0.1  # the child's own rusage, not bench's


def test_a_child_past_its_time_is_killed_with_its_group(tmp_path: Path) -> None:
    # The shell's background sleep shares its process group: the kill must reach it too.
    argv = ["sh", "-c", "sleep 30 & sleep 30"]
    run = run_child(argv, tmp_path / "out.txt", kill_after_s=0.3)
    assert run.killed
    assert run.wall_s < 5
