"""`bench fleet run`: one scenario on every host of an Ansible inventory, one fleet result.

Each host gets its own ansible-playbook process (ansible-runner, bench/playbooks/run.yml):
prepare (copy this bench, run the setup scripts), `bench run`, bring the run directory back.
A host that fails, vanishes or outlives its deadline costs only its own result; it is
recorded with the reason, stopped and cleaned up there (stop.yml), and `--resume` redoes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench import __version__
from bench.errors import InputError
from bench.fleet_store import FleetManifest, HostEntry, HostStatus, host_dir
from bench.host import git_commit
from bench.results import MANIFEST, Manifest, check_run_id
from bench.scenario_load import load_scenario

PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
REPO = Path(__file__).resolve().parents[1]
# What a host needs of the checkout to install and run bench.
SOURCE_PATHS = ("bench", "scripts", "scenarios", "pyproject.toml", "README.md")
STOP_TIMEOUT_S = 120.0
# How often ansible-runner's loop looks at the cancel flag (and the deadline).
POLL_S = 0.5

Note = Callable[[str], None]


@dataclass
class FleetOptions:
    inventory: Path
    results_dir: Path = Path("results")
    limit: str | None = None
    fleet_id: str | None = None
    resume: Path | None = None
    quick: bool = False
    runtimes: list[str] = field(default_factory=list)
    # Every host's prepare + run + fetch must end within this; it is killed at it.
    host_timeout_s: float = 3 * 3600.0
    # A vanished host is noticed after keepalive_s * keepalive_count without an answer.
    keepalive_s: int = 5
    keepalive_count: int = 3
    connect_timeout_s: int = 10
    known_hosts: Path | None = None


@dataclass
class FleetOutcome:
    fleet_dir: Path
    manifest: FleetManifest


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def inventory_hosts(inventory: Path, limit: str | None) -> list[str]:
    """The inventory's hosts that `limit` (an Ansible host pattern) selects, in order."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    if not inventory.is_file():
        raise InputError(f"{inventory}: no such inventory file")
    manager = InventoryManager(loader=DataLoader(), sources=[str(inventory)])
    if limit:
        manager.subset(limit)
    hosts = [str(h.name) for h in manager.get_hosts("all")]
    if not hosts:
        what = f" matching --limit {limit!r}" if limit else ""
        raise InputError(f"{inventory}: no hosts{what}")
    for name in hosts:
        check_run_id(name)
    return hosts


def source_tarball(dest: Path) -> str:
    """Pack the checkout's files a host needs into `dest`; the content's sha256."""
    if not (REPO / "pyproject.toml").is_file() or not (REPO / "scripts").is_dir():
        raise InputError(
            f"bench fleet installs bench on the hosts from its checkout; {REPO} is not one"
        )
    if (REPO / ".git").exists():
        listed = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
             "--exclude-standard", "--", *SOURCE_PATHS],
            capture_output=True, check=True, timeout=30,
        ).stdout  # fmt: skip
        names = sorted({n for n in listed.decode().split("\0") if n and (REPO / n).is_file()})
    else:
        names = sorted(
            str(p.relative_to(REPO))
            for top in SOURCE_PATHS
            for p in ([REPO / top] if (REPO / top).is_file() else (REPO / top).rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts
        )
    digest = hashlib.sha256()
    with tarfile.open(dest, "w:gz") as tar:
        for name in names:
            data = (REPO / name).read_bytes()
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = (REPO / name).stat().st_mode & 0o755
            tar.addfile(info, io.BytesIO(data))
    return digest.hexdigest()


def _ssh_args(options: FleetOptions, known_hosts: Path) -> str:
    """No connection sharing (a dead host must not look alive through a master
    connection), keep-alives so a vanished host fails instead of hanging, and host keys
    accepted on first use into bench's own known_hosts."""
    return " ".join([
        "-o ControlMaster=no", "-o ControlPath=none", "-o ControlPersist=no",
        f"-o ServerAliveInterval={options.keepalive_s}",
        f"-o ServerAliveCountMax={options.keepalive_count}",
        f"-o ConnectTimeout={options.connect_timeout_s}",
        "-o StrictHostKeyChecking=accept-new", f"-o UserKnownHostsFile={known_hosts}",
        "-o BatchMode=yes", "-o PasswordAuthentication=no",
    ])  # fmt: skip


def default_known_hosts() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(os.environ.get("BENCH_FLEET_KNOWN_HOSTS", Path(state) / "bench" / "known_hosts"))


@dataclass
class _HostJob:
    name: str
    entry: HostEntry
    deadline: float
    last_task: str = ""
    unreachable: str = ""
    failed: str = ""
    thread: threading.Thread | None = None


class _Fleet:
    """One fleet run: the manifest (saved under a lock) and the hosts' ansible jobs."""

    def __init__(self, fleet_dir: Path, manifest: FleetManifest, work: Path,
                 options: FleetOptions, extravars: dict[str, Any], note: Note) -> None:  # fmt: skip
        self.fleet_dir = fleet_dir
        self.manifest = manifest
        self.work = work
        self.options = options
        self.extravars = extravars
        self.note = note
        self.lock = threading.Lock()
        self.cancel = threading.Event()
        known_hosts = options.known_hosts or default_known_hosts()
        known_hosts.parent.mkdir(parents=True, exist_ok=True)
        bin_dir = str(Path(sys.executable).parent)
        self.envvars = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "ANSIBLE_SSH_ARGS": _ssh_args(options, known_hosts),
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            # One SSH connection per task instead of four (no multiplexing to save them).
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_TIMEOUT": str(options.connect_timeout_s),
            "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
            "ANSIBLE_DISPLAY_ARGS_TO_STDOUT": "False",
        }

    def save(self) -> None:
        with self.lock:
            self.manifest.save(self.fleet_dir)

    def set(self, job: _HostJob, status: HostStatus, reason: str = "") -> None:
        job.entry.status = status
        job.entry.reason = reason
        if status != "running":
            job.entry.ended_at = _now()
        self.save()
        self.note(f"{job.name}: {status}" + (f": {reason}" if reason else ""))

    def _playbook(self, job: _HostJob, playbook: str, timeout_s: float,
                  cancellable: bool) -> str:  # fmt: skip
        """Run one playbook on one host; ansible-runner's status (successful, failed, ...)."""
        import ansible_runner

        private = self.work / f"{job.name}-{playbook.removesuffix('.yml')}"
        private.mkdir()
        deadline = time.monotonic() + timeout_s

        def events(event: dict[str, Any]) -> bool:
            kind = event.get("event", "")
            data = event.get("event_data", {})
            if kind == "playbook_on_task_start":
                job.last_task = str(data.get("task", ""))
                if playbook == "run.yml":
                    self.note(f"{job.name}: {job.last_task}")
            elif kind == "runner_on_unreachable":
                job.unreachable = _message(data.get("res", {}))
            elif kind == "runner_on_failed" and not data.get("ignore_errors"):
                job.failed = f"{data.get('task', '')}: {_message(data.get('res', {}))}"
            return False  # nothing of the events is kept on disk

        def cancelled() -> bool:
            return (cancellable and self.cancel.is_set()) or time.monotonic() > deadline

        runner = ansible_runner.run(
            private_data_dir=str(private),
            project_dir=str(PLAYBOOKS),
            playbook=playbook,
            inventory=str(self.options.inventory.resolve()),
            limit=job.name,
            extravars={
                **self.extravars,
                "run_id": job.entry.run_id,
                "fetch_dest": str(self.work / f"{job.name}.tar.gz"),
            },
            envvars=self.envvars,
            settings={"pexpect_timeout": POLL_S, "suppress_ansible_output": True},
            quiet=True,
            suppress_env_files=True,
            event_handler=events,
            cancel_callback=cancelled,
            timeout=int(timeout_s) + 1,
        )
        if time.monotonic() > deadline and runner.status in ("canceled", "timeout"):
            return "timeout"
        return str(runner.status)

    def run_host(self, job: _HostJob) -> None:
        """One host from start to its final status; an error ends that host only."""
        try:
            self._run_host(job)
        except Exception as exc:
            self.set(job, "failed", f"bench fleet: {type(exc).__name__}: {exc}"[:300])

    def _run_host(self, job: _HostJob) -> None:
        job.entry.attempts += 1
        job.entry.started_at = _now()
        job.entry.ended_at = ""
        shutil.rmtree(host_dir(self.fleet_dir, job.name), ignore_errors=True)
        self.set(job, "running")
        timeout_s = max(job.deadline - time.monotonic(), 1.0)
        status = self._playbook(job, "run.yml", timeout_s, cancellable=True)
        if status == "successful":
            self._collect(job)
            return
        if status == "canceled":
            final: HostStatus = "interrupted"
            reason = f"interrupted during {job.last_task!r}"
        elif status == "timeout":
            final = "timeout"
            reason = f"no result within its deadline, during {job.last_task!r}"
        elif job.unreachable:
            final, reason = "unreachable", job.unreachable
        else:
            final, reason = "failed", job.failed or f"ansible-playbook ended {status}"
        self.note(f"{job.name}: {final}; stopping its run and cleaning up there")
        job.unreachable = ""
        cleanup = self._playbook(job, "stop.yml", STOP_TIMEOUT_S, cancellable=False)
        if cleanup != "successful":
            why = job.unreachable or job.failed or cleanup
            reason += f" (clean-up on the host not done: {why}; `--resume` retries it)"
        self.set(job, final, reason)

    def _collect(self, job: _HostJob) -> None:
        archive = self.work / f"{job.name}.tar.gz"
        dest = host_dir(self.fleet_dir, job.name)
        partial = dest.with_name(f".{job.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            tar.extractall(partial, filter="data")
        try:
            run = Manifest.load(partial / MANIFEST)
        except InputError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            self.set(job, "failed", f"the run it brought back is unreadable: {exc}")
            return
        os.replace(partial, dest)
        job.entry.hostname = run.host.hostname if run.host else ""
        if run.status == "complete":
            self.set(job, "complete")
        else:
            self.set(job, "incomplete", run.failure or f"its run ended {run.status}")


def _message(res: Any) -> str:
    """A short reason from a task result: its message or the tail of its stderr."""
    if not isinstance(res, dict):
        return str(res)[-300:]
    text = str(res.get("msg") or "")
    stderr = str(res.get("stderr") or "").strip()
    if stderr:
        text = f"{text}: {stderr.splitlines()[-1]}" if text else stderr.splitlines()[-1]
    return text.strip()[-300:] or "no message"


@contextlib.contextmanager
def _cancel_on_signals(cancel: threading.Event, note: Note) -> Iterator[list[str]]:
    """SIGINT/SIGTERM set `cancel` (every host's ansible-playbook is then killed and its
    run stopped on the host); the signal's name is appended to the yielded list."""
    received: list[str] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        if not received:
            note("stopping every host's run (interrupted)")
        received.append(signal.Signals(signum).name)
        cancel.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_fleet(scenario_path: Path, options: FleetOptions, note: Note) -> FleetOutcome:
    """Run the scenario on every selected host in parallel; write the fleet result."""
    scenario = load_scenario(scenario_path)
    scenario_sha256 = hashlib.sha256(scenario_path.read_bytes()).hexdigest()
    hosts = inventory_hosts(options.inventory, options.limit)
    if options.resume is not None:
        fleet_dir = options.resume
        manifest = FleetManifest.load(fleet_dir)
        if manifest.scenario_sha256 != scenario_sha256 or manifest.quick != options.quick:
            raise InputError(
                f"{fleet_dir} ran another scenario file or plan size (sha256 "
                f"{manifest.scenario_sha256[:12]}, quick={manifest.quick}); resume it with "
                "the same file and --quick setting"
            )
        missing = [h for h in manifest.unfinished() if h not in hosts]
        if missing:
            raise InputError(f"hosts of {fleet_dir} not in the inventory: {', '.join(missing)}")
        todo = manifest.unfinished()
        manifest.status = "running"
        manifest.ended_at = ""
    else:
        fleet_id = options.fleet_id or (
            f"fleet-{scenario.name}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"
        )
        check_run_id(fleet_id)
        fleet_dir = options.results_dir / fleet_id
        if fleet_dir.exists():
            raise InputError(f"{fleet_dir} exists already; results are never overwritten")
        manifest = FleetManifest(
            fleet_id=fleet_id, status="running", scenario_name=scenario.name,
            scenario_sha256=scenario_sha256, quick=options.quick,
            runtimes=list(options.runtimes), bench_version=__version__,
            bench_source_sha256="", git_commit=git_commit(),
            inventory=str(options.inventory), limit=options.limit or "", started_at=_now(),
            hosts={h: HostEntry(run_id=f"{fleet_id}.{h}") for h in hosts},
        )  # fmt: skip
        todo = hosts
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        (work / "ansible-tmp").mkdir()
        tarball = work / "bench-source.tar.gz"
        manifest.bench_source_sha256 = source_tarball(tarball)
        run_args = ["--quick"] if options.quick else []
        for runtime in options.runtimes:
            run_args += ["--runtime", runtime]
        extravars = {
            "fleet_id": manifest.fleet_id,
            "bench_version": __version__,
            "bench_source_tarball": str(tarball),
            "bench_source_id": manifest.bench_source_sha256[:16],
            "scenario_file": str(scenario_path.resolve()),
            "scenario_name": scenario_path.name,
            "bench_run_args": run_args,
        }
        fleet = _Fleet(fleet_dir, manifest, work, options, extravars, note)
        fleet.save()
        deadline = time.monotonic() + options.host_timeout_s
        jobs = [_HostJob(h, manifest.hosts[h], deadline) for h in todo]
        note(f"fleet {manifest.fleet_id}: {len(jobs)} host(s): {', '.join(todo)}")
        with _cancel_on_signals(fleet.cancel, note) as received:
            for job in jobs:
                job.thread = threading.Thread(target=fleet.run_host, args=(job,), daemon=True)
                job.thread.start()
            # Each job ends by its deadline (ansible-playbook is killed there) plus its
            # clean-up's; past that a job is abandoned, never waited for forever.
            give_up = deadline + STOP_TIMEOUT_S + 30.0
            for job in jobs:
                assert job.thread is not None
                while job.thread.is_alive() and time.monotonic() < give_up:
                    job.thread.join(POLL_S)
                if job.thread.is_alive():
                    job.entry.status = "timeout"
                    job.entry.reason = "its ansible-playbook did not end; abandoned"
        statuses = {e.status for e in manifest.hosts.values()}
        if received:
            manifest.status = "interrupted"
        else:
            manifest.status = "complete" if statuses == {"complete"} else "incomplete"
        manifest.ended_at = _now()
        fleet.save()
    return FleetOutcome(fleet_dir, manifest)
