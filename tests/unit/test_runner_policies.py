"""The runner's policies through the fake runtime (tests/fakeruntime.py): no root, seconds.

Statuses, giving a runtime up, resume, interruption and the run's verdict, through the
real runner, result store, sampler and cgroup readers over the fixture cgroup trees.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.errors import BenchError, InputError
from bench.results import Manifest, TrialResult
from bench.runner import MAX_RUNTIME_ERRORS, RunOptions, RunOutcome, run_scenario
from bench.runtimes.base import Availability
from tests.fakeruntime import FIXTURES, FakeHost, Script, registered

WORKLOAD = """
[[workloads]]
name = "{label}"
command = ["/bin/true", "{label}"]
"""


def write_scenario(
    directory: Path,
    labels: list[str],
    runtimes: list[str],
    repetitions: int = 1,
    warmups: int = 0,
) -> Path:
    text = (
        f'name = "fake"\nruntimes = {json.dumps(runtimes)}\nrepetitions = {repetitions}\n'
        f"warmups = {warmups}\nsample_interval_ms = 20\ntimeout_s = 5\n"
    )
    text += "".join(WORKLOAD.format(label=label) for label in labels)
    path = directory / "scenario.toml"
    path.write_text(text)
    return path


@pytest.fixture(params=["v2", "v1"])
def host(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeHost]:
    """Fake runtimes `fake` and `fake2` whose cgroups are copies of one fixture tree."""
    cgroups = tmp_path / "cgroups"
    cgroups.mkdir()
    with registered(FakeHost(cgroups, request.param), "fake", "fake2") as fake_host:
        yield fake_host


def run(
    tmp_path: Path, labels: list[str], runtimes: list[str], repetitions: int = 1, warmups: int = 0
) -> tuple[RunOutcome, Manifest]:
    """Run a scenario of `labels` (command workloads the fake runs by label) to its end."""
    scenario = write_scenario(tmp_path, labels, runtimes, repetitions, warmups)
    outcome = run_scenario(scenario, RunOptions(results_dir=tmp_path / "results", run_id="r1"))
    return outcome, read_manifest(outcome.run_dir)


def read_manifest(run_dir: Path) -> Manifest:
    return Manifest.load(run_dir / "manifest.json")


def by_workload(outcome: RunOutcome) -> dict[str, TrialResult]:
    return {t.workload: t for t in outcome.trials}


def test_each_status_from_what_the_workload_did(host: FakeHost, tmp_path: Path) -> None:
    host.scripts.update(
        {
            "fine": Script(exit_code=0),
            "exit3": Script(exit_code=3),
            # stress-ng respawns OOM-killed workers and exits 0: the counter decides.
            "oom": Script(exit_code=0, oom_kills=2),
            "hang": Script(exit_code=None),
        }
    )
    host.availability["fake2"] = [Availability(False, "fake2 is switched off", "switch it on")]
    outcome, manifest = run(tmp_path, ["fine", "exit3", "oom", "hang"], ["fake", "fake2"])

    assert outcome.status == "complete" and manifest.status == "complete"
    fake = {t.workload: t for t in outcome.trials if t.runtime == "fake"}
    assert {name: t.status for name, t in fake.items()} == {
        "fine": "ok",
        "exit3": "failed",
        "oom": "oom",
        "hang": "timeout",
    }
    assert (fake["exit3"].exit_code, fake["exit3"].error) == (3, "exit code 3")
    assert (fake["oom"].oom_kills, fake["oom"].error) == (2, "2 OOM kill(s) in the cgroup")
    assert fake["hang"].exit_code is None and "timeout" in fake["hang"].error
    assert fake["fine"].oom_kills == 0 and fake["fine"].error == ""
    skipped = [t for t in outcome.trials if t.runtime == "fake2"]
    assert [t.status for t in skipped] == ["skipped"] * 4
    assert all(t.error == "fake2 is switched off Fix: switch it on" for t in skipped)
    assert outcome.skipped_runtimes == {"fake2": "fake2 is switched off Fix: switch it on"}
    assert all(h.stopped for h in host.handles) and len(host.handles) == 4
    assert sorted(host.closed) == ["fake", "fake2"]


def test_totals_come_from_the_fixture_cgroup(host: FakeHost, tmp_path: Path) -> None:
    outcome, manifest = run(tmp_path, ["fine"], ["fake"])
    (trial,) = outcome.trials
    tree = FIXTURES / host.version
    if host.version == "v2":
        usage_s = _key(tree / "cpu.stat", "usage_usec") / 1e6
        peak = int((tree / "memory.peak").read_text())
        pids_peak = int((tree / "pids.peak").read_text())
        assert trial.cgroup == str(host.root / host.handles[0].name)
    else:
        usage_s = int((tree / "cpuacct" / "cpuacct.usage").read_text()) / 1e9
        peak = int((tree / "memory" / "memory.max_usage_in_bytes").read_text())
        pids_peak = int((tree / "pids" / "pids.peak").read_text())
        assert trial.cgroup == str(host.root / host.handles[0].name / "memory")
    assert trial.cpu_s == pytest.approx(usage_s)
    assert (trial.mem_peak_bytes, trial.mem_peak_from_samples) == (peak, False)
    assert trial.pids_peak == pids_peak
    assert trial.samples >= 2  # the first and the final full read
    assert trial.stop_s == pytest.approx(0.001)
    assert manifest.trials_done == manifest.trials_planned == 1


def test_a_start_error_fails_only_that_trial(host: FakeHost, tmp_path: Path) -> None:
    host.scripts["bad"] = Script(start_error=BenchError("cpuset 7: Numerical result out of range"))
    outcome, _ = run(tmp_path, ["fine", "bad"], ["fake"])
    trials = by_workload(outcome)
    assert trials["fine"].status == "ok"
    assert trials["bad"].status == "failed" and trials["bad"].exit_code is None
    assert "Numerical result out of range" in trials["bad"].error
    assert outcome.status == "complete"  # one measured trial ran


def test_a_runtime_is_given_up_after_repeated_errors(host: FakeHost, tmp_path: Path) -> None:
    host.scripts[("fake", "w")] = Script(start_error=ConnectionError("daemon gone"))
    reps = MAX_RUNTIME_ERRORS + 2
    outcome, manifest = run(tmp_path, ["w"], ["fake", "fake2"], repetitions=reps)

    fake = [t for t in outcome.trials if t.runtime == "fake"]
    assert [t.status for t in fake] == ["failed"] * MAX_RUNTIME_ERRORS + ["skipped"] * 2
    assert all("fake failed: ConnectionError: daemon gone" in t.error for t in fake[:-2])
    assert all("gave up during the run" in t.error for t in fake[-2:])
    assert [t.status for t in outcome.trials if t.runtime == "fake2"] == ["ok"] * reps
    # Resumable: `bench run --resume` runs the skipped trials once the runtime is back.
    assert outcome.status == "incomplete" and manifest.status == "incomplete"
    assert manifest.runtimes["fake"].available is False


def test_a_runtime_that_stops_answering_is_given_up_at_once(host: FakeHost, tmp_path: Path) -> None:
    host.scripts[("fake", "w")] = Script(wait_error=ConnectionError("socket closed"))
    gone = Availability(False, "fake daemon is gone")
    host.availability["fake"] = [Availability(True), gone]
    outcome, _ = run(tmp_path, ["w"], ["fake", "fake2"], repetitions=3)
    fake = [t for t in outcome.trials if t.runtime == "fake"]
    assert [t.status for t in fake] == ["failed", "skipped", "skipped"]
    assert "fake daemon is gone" in fake[1].error
    assert outcome.status == "incomplete"
    # The handle whose wait raised was still stopped.
    assert [h.stopped for h in host.handles if h.runtime == "fake"] == [True]


def test_a_stop_that_fails_is_retried_and_what_stays_is_reported(
    host: FakeHost, tmp_path: Path
) -> None:
    host.scripts["once"] = Script(stop_errors=1)
    host.scripts["never"] = Script(stop_errors=99)
    outcome, manifest = run(tmp_path, ["once", "never"], ["fake"])
    trials = by_workload(outcome)
    assert "cleanup failed: ConnectionError" in trials["once"].error
    once, never = host.started()
    assert once.stopped and once.stops == 2  # retried at the end of the run
    assert not never.stopped
    assert manifest.leftovers == [f"{never.name} (pid 0)"]


def test_resume_does_not_redo_finished_trials(host: FakeHost, tmp_path: Path) -> None:
    interrupted = {"done": False}

    def sigterm_once() -> None:
        if not interrupted["done"]:
            interrupted["done"] = True
            os.kill(os.getpid(), signal.SIGTERM)

    host.scripts["second"] = Script(on_wait=sigterm_once)
    first, manifest = run(tmp_path, ["first", "second", "third"], ["fake"])
    assert first.status == "incomplete" and manifest.status == "incomplete"
    assert [t.workload for t in first.trials] == ["first"]
    started_before = len(host.handles)

    options = RunOptions(resume=first.run_dir)
    resumed = run_scenario(tmp_path / "scenario.toml", options)
    assert resumed.status == "complete"
    assert sorted(t.workload for t in resumed.trials) == ["first", "second", "third"]
    assert {t.status for t in resumed.trials} == {"ok"}
    again = [h.trial_id for h in host.handles[started_before:]]
    assert again == [t.trial_id for t in resumed.trials if t.workload != "first"]
    assert read_manifest(first.run_dir).trials_done == 3
    assert read_manifest(first.run_dir).scenario.quick is False


def test_resume_with_the_other_plan_size_is_refused(host: FakeHost, tmp_path: Path) -> None:
    """A --quick run resumed without --quick would mix two plans' trials in one store."""
    first, _ = run(tmp_path, ["only"], ["fake"])
    with pytest.raises(InputError, match="was run without --quick; resume it without --quick"):
        run_scenario(tmp_path / "scenario.toml", RunOptions(resume=first.run_dir, quick=True))


def test_a_signal_during_a_wait_stops_everything_and_keeps_the_finished(
    host: FakeHost, tmp_path: Path
) -> None:
    host.scripts["victim"] = Script(on_wait=lambda: os.kill(os.getpid(), signal.SIGINT))
    outcome, manifest = run(tmp_path, ["before", "victim", "after"], ["fake"])
    assert outcome.status == "incomplete" and manifest.status == "incomplete"
    assert [t.workload for t in outcome.trials] == ["before"]
    assert [h.trial_id.split("-")[-2] for h in host.handles] == ["before", "victim"]
    assert all(h.stopped for h in host.handles)
    assert manifest.leftovers == []
    assert (outcome.run_dir / "trials.parquet").exists()
    assert (outcome.run_dir / "samples.parquet").exists()


def test_a_signal_during_a_start_waits_for_the_start_to_finish(
    host: FakeHost, tmp_path: Path
) -> None:
    # A runtime is never cut off half-way through creating a container: the start
    # completes, the signal is raised at the next safe point, and the handle is stopped.
    host.scripts["first"] = Script(on_start=lambda: os.kill(os.getpid(), signal.SIGTERM))
    outcome, manifest = run(tmp_path, ["first", "second"], ["fake"])
    assert manifest.status == "incomplete"
    assert [h.trial_id.split("-")[-2] for h in host.handles] == ["first"]
    assert host.handles[0].stopped
    assert outcome.trials == []


def test_no_measured_trial_ran_is_a_failed_run_that_says_why(
    host: FakeHost, tmp_path: Path
) -> None:
    host.scripts["w"] = Script(start_error=BenchError("cpuset 7: Numerical result out of range"))
    outcome, manifest = run(tmp_path, ["w"], ["fake"], repetitions=2, warmups=1)
    assert outcome.status == "failed" and manifest.status == "failed"
    assert "none of the 2 measured trial(s) ran" in outcome.failure
    assert "Numerical result out of range" in outcome.failure
    assert manifest.failure == outcome.failure


def test_a_warmup_that_ran_does_not_make_a_run_complete(host: FakeHost, tmp_path: Path) -> None:
    calls = {"n": 0}

    def fail_after_the_warmup() -> None:
        calls["n"] += 1
        if calls["n"] > 1:
            raise BenchError("fake: out of disk")

    host.scripts["w"] = Script(on_start=fail_after_the_warmup)
    outcome, _ = run(tmp_path, ["w"], ["fake"], repetitions=2, warmups=1)
    assert [t.status for t in outcome.trials] == ["ok", "failed", "failed"]
    assert outcome.status == "failed" and "out of disk" in outcome.failure


def test_every_runtime_unavailable_is_a_failed_run(host: FakeHost, tmp_path: Path) -> None:
    host.availability["fake"] = [Availability(False, "fake is switched off")]
    outcome, _ = run(tmp_path, ["w"], ["fake"])
    assert outcome.status == "failed"
    assert "fake is switched off" in outcome.failure


def test_workloads_failing_on_their_own_are_measurements(host: FakeHost, tmp_path: Path) -> None:
    host.scripts.update(
        {"crash": Script(exit_code=139), "oom": Script(oom_kills=1), "hang": Script(None)}
    )
    outcome, _ = run(tmp_path, ["crash", "oom", "hang"], ["fake"])
    assert {t.status for t in outcome.trials} == {"failed", "oom", "timeout"}
    assert outcome.status == "complete" and outcome.failure == ""


def test_the_cli_exits_1_and_says_what_failed(host: FakeHost, tmp_path: Path) -> None:
    host.scripts["w"] = Script(start_error=BenchError("cpuset 7: Numerical result out of range"))
    scenario = write_scenario(tmp_path, ["w"], ["fake"])
    argv = ["run", str(scenario), "--results-dir", str(tmp_path / "results"), "--json"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    out = json.loads(result.stdout)
    assert out["status"] == "failed"
    assert "Numerical result out of range" in out["failure"]
    assert "error: none of the 1 measured trial(s) ran" in result.stderr


def test_the_cli_exits_0_when_workloads_fail_on_their_own(host: FakeHost, tmp_path: Path) -> None:
    host.scripts["w"] = Script(exit_code=2)
    scenario = write_scenario(tmp_path, ["w"], ["fake"])
    argv = ["run", str(scenario), "--results-dir", str(tmp_path / "results"), "--json"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "complete"


def _key(path: Path, key: str) -> int:
    for line in path.read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    raise AssertionError(f"{key} not in {path}")


def test_an_oci_runtime_the_engine_cannot_run_is_skipped_and_the_rest_runs(
    tmp_path: Path,
) -> None:
    """runsc missing under an engine: its trials are skipped with the fix, runc's run, and
    the manifest describes each OCI runtime of the axis."""
    cgroups = tmp_path / "cgroups"
    cgroups.mkdir()
    fake_host = FakeHost(cgroups, "v2")
    refused = Availability(False, "runsc is not installed", "apt-get install runsc")
    fake_host.oci_refused["runsc"] = refused
    with registered(fake_host, "engine", oci_axis=True):
        scenario = write_scenario(tmp_path, ["fine"], ["engine"], repetitions=2)
        axis = 'oci_runtimes = ["runc", "runsc"]\nrepetitions'
        scenario.write_text(scenario.read_text().replace("repetitions", axis))
        outcome = run_scenario(scenario, RunOptions(results_dir=tmp_path / "results", run_id="r1"))
    by_oci = {oci: [t for t in outcome.trials if t.oci_runtime == oci] for oci in ("runc", "runsc")}
    assert [t.status for t in by_oci["runc"]] == ["ok", "ok"]
    assert [t.status for t in by_oci["runsc"]] == ["skipped", "skipped"]
    reason = "runsc is not installed Fix: apt-get install runsc"
    assert all(t.error == reason for t in by_oci["runsc"])
    described = read_manifest(outcome.run_dir).runtimes["engine"].oci_runtimes
    assert described == {
        "runc": "runc fake 1.0",
        "runsc": f"skipped: {reason}",
    }
