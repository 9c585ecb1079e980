"""The processes `mlops up` starts: pid files, identity checks, start, stop, strays.

Every service runs in its own session with its output in `<home>/logs/<name>.log` and a
pid file `<home>/run/<name>.json` that records its pid and process group. A pid file only
counts while a process with that pid exists, started at the recorded time and still has a
matching command line, so `down` never signals a foreign process that reused the pid. A
leader that died without passing a signal on (SIGKILL) leaves its group `orphaned`:
`orphans()` finds the group's members, `status` shows them, `down` and `up` stop them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from airflow_project.host.files import write_atomic
from airflow_project.host.processes import (
    command_line,
    orphaned_members,
    stop_orphaned_group,
    stop_process_groups,
)
from airflow_project.local.config import LocalConfig
from airflow_project.settings import REPO_ROOT


@dataclass
class PidRecord:
    name: str
    pid: int
    port: int | None
    argv: list[str]
    log: str = ""
    create_time: float | None = None  # psutil create_time of the process
    started_at: str = ""  # human-readable, UTC
    pgid: int | None = None  # its process group (its own: started in a new session); None = pid

    @property
    def group(self) -> int:
        return self.pgid or self.pid

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> PidRecord:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError("pid file is not a JSON object")
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            port=None if data.get("port") is None else int(data["port"]),
            argv=[str(a) for a in data["argv"]],
            log=str(data.get("log", "")),
            create_time=None if data.get("create_time") is None else float(data["create_time"]),
            started_at=str(data.get("started_at", "")),
            pgid=None if data.get("pgid") is None else int(data["pgid"]),
        )


def pid_path(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.json"


def write_pid_record(run_dir: Path, record: PidRecord) -> Path:
    return write_atomic(pid_path(run_dir, record.name), record.to_json())


def read_pid_records(run_dir: Path) -> dict[str, PidRecord]:
    """All readable pid files by service name; unreadable ones are ignored."""
    records: dict[str, PidRecord] = {}
    if not run_dir.is_dir():
        return records
    for path in sorted(run_dir.glob("*.json")):
        try:
            record = PidRecord.from_json(path.read_text())
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if record.name == path.stem:
            records[record.name] = record
    return records


def remove_pid_record(run_dir: Path, name: str) -> None:
    pid_path(run_dir, name).unlink(missing_ok=True)


def _normalise(text: str) -> str:
    return text.replace("_", "-")


def cmdline_matches(argv: list[str], cmdline: list[str]) -> bool:
    """Is `cmdline` (of a live process) the process started with `argv`?

    The program may run through an interpreter (`python .venv/bin/airflow ...`,
    `node .../azurite-blob ...`) and may have retitled itself (Airflow's
    api-server shows `airflow api_server -- host:... port:...`), so the check is
    on the program's name and, when there is one, its subcommand.
    """
    if not argv or not cmdline:
        return False
    text = _normalise(" ".join(cmdline))
    program = _normalise(os.path.basename(argv[0]))
    if program not in text:
        return False
    if len(argv) > 1 and not argv[1].startswith("-"):
        return _normalise(argv[1]) in text
    return True


def live_process(record: PidRecord) -> psutil.Process | None:
    """The live process a pid file stands for, or None (gone, zombie, pid reused)."""
    try:
        proc = psutil.Process(record.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        # create_time is jiffies since boot + the kernel's btime, which is whole seconds and
        # can move by one between reads: compare with a 2s tolerance.
        if record.create_time is not None and abs(proc.create_time() - record.create_time) > 2.0:
            return None
        cmdline = proc.cmdline()
        for _ in range(10):  # empty for a moment while the process is still being exec'ed
            if cmdline:
                break
            time.sleep(0.05)
            cmdline = proc.cmdline()
        if not cmdline:
            # still unreadable: the start time (checked above) is then the identity
            return proc if record.create_time is not None else None
        if not cmdline_matches(record.argv, cmdline):
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def record_alive(record: PidRecord) -> bool:
    return live_process(record) is not None


def orphans(record: PidRecord) -> list[psutil.Process]:
    """The live members of the record's process group when its leader is gone (empty while
    the leader runs, and when nothing is left)."""
    if live_process(record) is not None:
        return []
    return orphaned_members(record.group, record.create_time)


def stop_orphans(record: PidRecord, timeout: float = 15.0) -> list[int]:
    """Stop what is left of the record's group (see `orphans`); the pids that were running."""
    members = orphans(record)
    return stop_orphaned_group(record.group, members, timeout) if members else []


_INHERITED_AIRFLOW_PREFIXES = ("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")


def child_env(env: dict[str, str], base: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without its Airflow settings, plus the service's own.

    Airflow settings come only from `LocalConfig.airflow_env()`, so a shell (or a
    test session) with its own AIRFLOW_HOME or AIRFLOW__* variables cannot leak
    into the platform.
    """
    base = dict(os.environ if base is None else base)
    if any(key.startswith("AIRFLOW") for key in env):
        base = {
            k: v for k, v in base.items()
            if k != "AIRFLOW_HOME" and not k.startswith(_INHERITED_AIRFLOW_PREFIXES)
        }
    return {**base, **env}


# Popen objects of processes started by this Python process, so that `down` in
# the same process (tests) can reap them instead of leaving zombies.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def start(name: str, argv: list[str], port: int | None, env: dict[str, str],
          config: LocalConfig) -> tuple[PidRecord, subprocess.Popen[bytes]]:
    """Start a service in a session of its own, log to `<logs>/<name>.log`, write its pid file."""
    config.logs.mkdir(parents=True, exist_ok=True)
    log_path = config.logs / f"{name}.log"
    now = dt.datetime.now(dt.UTC)
    with open(log_path, "ab") as log:
        log.write(f"\n=== {now:%Y-%m-%d %H:%M:%S} UTC mlops up: {' '.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=child_env(env), cwd=str(REPO_ROOT),
            start_new_session=True,  # own process group: `down` stops its children too
        )
    _CHILDREN[process.pid] = process
    try:
        create_time: float | None = psutil.Process(process.pid).create_time()
    except psutil.Error:
        create_time = None
    record = PidRecord(
        name=name, pid=process.pid, port=port, argv=argv,
        log=str(log_path), create_time=create_time, started_at=f"{now:%Y-%m-%dT%H:%M:%SZ}",
        pgid=process.pid,  # start_new_session: the leader's pid is the group's id
    )
    write_pid_record(config.run, record)
    return record, process


def stop_records(records: Iterable[PidRecord], timeout: float = 20.0) -> list[PidRecord]:
    """SIGTERM each live record's process group and descendants; SIGKILL after timeout.

    Only records whose process still matches are touched. Returns those stopped.
    """
    live = [record for record in records if live_process(record) is not None]
    stop_process_groups([record.pid for record in live], timeout)
    for record in live:
        child = _CHILDREN.pop(record.pid, None)
        if child is not None:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    return live


def stray_processes(config: LocalConfig, serving_pids: Iterable[int] = ()) -> list[psutil.Process]:
    """Processes of this home that no pid file accounts for (e.g. `run/` was deleted).

    A process belongs to the home when its command line names a path inside it
    (Azurite's --location, MLflow's SQLite file) or its AIRFLOW_HOME is the
    home's Airflow folder. Pid-file processes, the local serving controller's
    model servers and routers (`serving_pids`), their descendants and this process's
    own ancestry are excluded. Only reported, never signalled.
    """
    root = str(config.root.resolve())
    airflow_home = str(config.airflow_home.resolve())
    known: set[int] = {os.getpid()}
    try:
        known.update(p.pid for p in psutil.Process().parents())
    except psutil.Error:
        pass
    records = read_pid_records(config.run).values()
    tracked = [proc.pid for proc in map(live_process, records) if proc]
    known.update(proc.pid for record in records for proc in orphans(record))  # reported as orphaned
    for pid in (*tracked, *serving_pids):
        known.add(pid)
        try:
            known.update(c.pid for c in psutil.Process(pid).children(recursive=True))
        except psutil.Error:
            pass
    strays: list[psutil.Process] = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid in known:
            continue
        try:
            cmdline = proc.info.get("cmdline") or []
            mine = any(root + os.sep in arg or arg == root for arg in cmdline)
            if not mine and proc.status() != psutil.STATUS_ZOMBIE:
                mine = proc.environ().get("AIRFLOW_HOME") == airflow_home
        except (psutil.Error, OSError):
            continue
        if mine:
            strays.append(proc)
    return strays


def describe(proc: psutil.Process) -> str:
    return f"pid {proc.pid} ({command_line(proc)})"
