"""The `bench` command: parses arguments and calls library functions (nothing more)."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from bench.errors import BenchError

if TYPE_CHECKING:
    from bench.plan import Trial
    from bench.results import TrialResult

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int) -> None:
    click.echo(f"bench: {message}", err=True)
    sys.exit(code)


def friendly(func: F) -> F:
    """Turn BenchError into a one-paragraph message and its exit code, never a traceback."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BenchError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as exc:
            if os.environ.get("BENCH_DEBUG"):
                traceback.print_exc()
            _fail(
                f"internal error: {type(exc).__name__}: {exc}. This is a bug in bench; "
                "rerun with BENCH_DEBUG=1 for the traceback and report it.",
                1,
            )

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper  # type: ignore[return-value]


@click.group()
@click.version_option(package_name="bench")
def main() -> None:
    """Benchmark container runtimes (bare metal, Docker, Podman, LXC) through cgroups."""


class RichProgress:
    """Progress bar on stderr; notes printed above it."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = Console(stderr=True)
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.task = self.bar.add_task("starting", total=None)

    def __enter__(self) -> RichProgress:
        self.bar.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.bar.stop()

    def planned(self, total: int) -> None:
        self.bar.update(self.task, total=total, description="running")

    def trial_started(self, trial: Trial) -> None:
        self.bar.update(self.task, description=f"{trial.runtime} {trial.workload.name}")

    def trial_finished(self, result: TrialResult) -> None:
        self.bar.advance(self.task)
        if result.status not in ("ok", "skipped"):
            self.console.print(
                f"[yellow]{result.trial_id}: {result.status}[/] {result.error}", highlight=False
            )

    def note(self, message: str) -> None:
        self.console.print(message, highlight=False)


@main.command()
@click.argument("scenario")
@click.option("--runtime", "runtimes", multiple=True, help="Only this runtime (repeatable).")
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"))
@click.option("--run-id", help="Name of the run folder (default: scenario-time-random).")
@click.option("--resume", type=click.Path(path_type=Path), help="Finish an interrupted run.")
@click.option("--quick", is_flag=True, help="CI-sized: fewer repetitions, shorter stressors.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@friendly
def run(
    scenario: str,
    runtimes: tuple[str, ...],
    results_dir: Path,
    run_id: str | None,
    resume: Path | None,
    quick: bool,
    as_json: bool,
) -> None:
    """Run SCENARIO (a path or the name of a shipped scenario)."""
    from bench.runner import RunOptions, run_scenario
    from bench.scenario_load import resolve_scenario
    from bench.summary import print_run_summary

    path = resolve_scenario(scenario)
    options = RunOptions(results_dir, run_id, list(runtimes) or None, resume, quick)
    with RichProgress() as progress:
        outcome = run_scenario(path, options, progress)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "run_id": outcome.run_id,
                    "run_dir": str(outcome.run_dir),
                    "status": outcome.status,
                    "trials": len(outcome.trials),
                    "skipped_runtimes": outcome.skipped_runtimes,
                    "failure": outcome.failure,
                }
            )
        )
    else:
        print_run_summary(outcome.run_dir, outcome.skipped_runtimes)
        click.echo(f"results: {outcome.run_dir} ({outcome.status})")
    if outcome.failure:
        click.echo(f"error: {outcome.failure}", err=True)
    if outcome.status != "complete":
        sys.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@friendly
def doctor(as_json: bool) -> None:
    """Host facts and whether each runtime can run here (and how to fix it)."""
    from bench.doctor import run_doctor

    report = run_doctor()
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    host = report.host
    click.echo(f"host      {host['hostname']}  kernel {host['kernel']}  {host['cpus']} cpus")
    click.echo(f"cgroups   {host['cgroup_version']}  controllers: {' '.join(report.controllers)}")
    verdict = "yes" if report.can_create_cgroups else "NO"
    click.echo(f"create    {verdict}: {report.cgroup_detail}")
    for check in report.runtimes:
        if check.available:
            oci = (
                f"  (OCI runtime: {check.default_oci_runtime})" if check.default_oci_runtime else ""
            )
            click.echo(f"{check.name:<14} ok  {check.version}{oci}")
            for under in check.oci_runtimes:
                label = f"  +{under.name}"
                if under.available:
                    click.echo(f"{label:<14} ok  {under.version}")
                else:
                    click.echo(f"{label:<14} --  {under.reason}  fix: {under.fix}")
        else:
            click.echo(f"{check.name:<14} --  {check.reason}  fix: {check.fix}")
    for tool in report.tools:
        if not tool.available:
            click.echo(f"{tool.name:<9} --  missing {', '.join(tool.missing)}  fix: {tool.fix}")
    for unsupported in report.unsupported:
        click.echo(f"{unsupported.name:<14} not supported: {unsupported.reason}")


@main.command(name="list")
@friendly
def list_scenarios() -> None:
    """Shipped scenarios with one-line descriptions."""
    from bench.scenario_load import shipped_scenarios

    for name, description in shipped_scenarios():
        click.echo(f"{name:<22} {description}")


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None)
@click.option(
    "--format", "formats", multiple=True, type=click.Choice(["html", "md", "json"]), default=()
)
@friendly
def report(run_dirs: tuple[Path, ...], out: Path | None, formats: tuple[str, ...]) -> None:
    """Write reports/<run-id>/ (index.html, report.md, report.json) for RUN_DIR(s)."""
    from bench.analysis import load_run
    from bench.fleet_store import expand_runs, is_fleet_dir
    from bench.report import build_report

    # A fleet result: its hosts' runs, each on its own and side by side.
    runs, names = [], []
    for path in run_dirs:
        if is_fleet_dir(path):
            runs += [load_run(host_run) for host_run in expand_runs([path])]
            names.append(path.name)
        else:
            runs.append(load_run(path))
            names.append(runs[-1].run_id)
    out_dir = out or Path("reports") / "-vs-".join(names)
    for path in build_report(runs, out_dir, set(formats or ("html", "md", "json"))):
        click.echo(str(path))


@main.command()
@click.argument("base", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--threshold", type=float, default=5.0, help="Regression threshold in percent.")
@click.option("--markdown", is_flag=True, help="Print Markdown (for a CI job summary).")
@friendly
def compare(base: Path, new: Path, threshold: float, markdown: bool) -> None:
    """Compare NEW against BASE; exit 1 on a significant regression over the threshold."""
    from bench.analysis import load_run
    from bench.compare import compare_fleets, compare_runs, to_markdown
    from bench.errors import InputError
    from bench.fleet_store import is_fleet_dir

    if is_fleet_dir(base) or is_fleet_dir(new):
        if not (is_fleet_dir(base) and is_fleet_dir(new)):
            raise InputError("compare a fleet result with a fleet result (or hosts/<host> runs)")
        fleet = compare_fleets(base, new, threshold)
        for host, why in fleet.left_out.items():
            click.echo(f"host {host} not compared: {why}", err=True)
        for host, one in fleet.by_host.items():
            text = to_markdown(one) if markdown else one.to_frame().to_string()
            click.echo(f"{'## ' if markdown else ''}host {host}\n\n{text}")
        if fleet.has_regression:
            sys.exit(1)
        return
    comparison = compare_runs(load_run(base), load_run(new), threshold)
    click.echo(to_markdown(comparison) if markdown else comparison.to_frame().to_string())
    if comparison.has_regression:
        sys.exit(1)


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None)
@click.option("--metric", "metrics", multiple=True, help="Only this metric (repeatable).")
@click.option(
    "--format", "formats", multiple=True, type=click.Choice(["html", "md", "json"]), default=()
)
@friendly
def history(
    run_dirs: tuple[Path, ...], out: Path | None, metrics: tuple[str, ...], formats: tuple[str, ...]
) -> None:
    """Trends and change points across runs of one scenario (RUN_DIRs or folders of them)."""
    from bench.history import load_history
    from bench.report.history import build_history

    found = load_history(run_dirs, metrics)
    name = found.scenario.name if found.scenario else "runs"
    out_dir = out or Path("reports") / f"history-{name}"
    for item in found.excluded:
        where = f" {item.runtime}/{item.workload}" if item.runtime else ""
        click.echo(f"left out: {item.run_id}{where}: {item.reason}", err=True)
    for path in build_history(found, out_dir, set(formats or ("html", "md", "json"))):
        click.echo(str(path))


@main.command()
@click.option("--force", is_flag=True, help="Even while another bench run is in progress.")
@friendly
def gc(force: bool) -> None:
    """Remove containers, cgroups and images that bench left behind."""
    from bench.gc import collect_garbage

    for line in collect_garbage(force=force):
        click.echo(line)


@main.group()
def fleet() -> None:
    """One scenario on every host of an Ansible inventory, one merged result."""


@fleet.command(name="run")
@click.argument("scenario")
@click.option("--inventory", "-i", required=True, type=click.Path(path_type=Path))
@click.option("--limit", "-l", help="Only the hosts this Ansible pattern selects.")
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"))
@click.option("--fleet-id", help="Name of the fleet folder (default: fleet-scenario-time-random).")
@click.option(
    "--resume",
    type=click.Path(path_type=Path),
    help="A fleet folder: redo only its hosts that did not finish.",
)
@click.option("--runtime", "runtimes", multiple=True, help="Only this runtime (repeatable).")
@click.option("--quick", is_flag=True, help="CI-sized: fewer repetitions, shorter stressors.")
@click.option(
    "--host-timeout", "host_timeout_s", type=float, default=3 * 3600.0, show_default=True,
    help="Seconds every host gets for prepare, run and fetch; it is stopped at that.",
)  # fmt: skip
@click.option(
    "--ssh-keepalive", "keepalive_s", type=click.IntRange(1, 300), default=5, show_default=True,
    help="Seconds between SSH keep-alives; a host silent for 3 of them is given up.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@friendly
def fleet_run(
    scenario: str,
    inventory: Path,
    limit: str | None,
    results_dir: Path,
    fleet_id: str | None,
    resume: Path | None,
    runtimes: tuple[str, ...],
    quick: bool,
    host_timeout_s: float,
    keepalive_s: int,
    as_json: bool,
) -> None:
    """Run SCENARIO on every host of the inventory; write results/<fleet-id>/."""
    from dataclasses import asdict

    from bench.fleet import FleetOptions, run_fleet
    from bench.scenario_load import resolve_scenario

    options = FleetOptions(
        inventory,
        results_dir,
        limit,
        fleet_id,
        resume,
        quick,
        list(runtimes),
        host_timeout_s,
        keepalive_s,
    )
    outcome = run_fleet(resolve_scenario(scenario), options, lambda m: click.echo(m, err=True))
    manifest = outcome.manifest
    if as_json:
        hosts = {name: asdict(entry) for name, entry in manifest.hosts.items()}
        out = {"fleet_dir": str(outcome.fleet_dir), "status": manifest.status, "hosts": hosts}
        click.echo(json.dumps(out))
    else:
        for name, entry in manifest.hosts.items():
            reason = f" ({entry.reason})" if entry.reason else ""
            click.echo(f"{name}: {entry.status}{reason}")
        click.echo(f"results: {outcome.fleet_dir} ({manifest.status})")
    if manifest.status == "interrupted":
        sys.exit(130)
    if manifest.status != "complete":
        sys.exit(1)
