"""`mlops up`, `mlops status` and `mlops down`: the local platform as supervised processes."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import shutil
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from airflow_project.local import job, models, processes, stack, summary
from airflow_project.local.airflow_api import AirflowApiError
from airflow_project.local.config import AIRFLOW_ADMIN_USER, LocalConfig
from airflow_project.local.errors import PlatformError, PrerequisiteError
from airflow_project.settings import REPO_ROOT


def up(config: LocalConfig | None = None, rows: int = 20000, timeout: float = 1200.0,
       out: IO[str] | None = None, err: IO[str] | None = None, drift_demo: bool = False) -> int:
    """Start (or reuse) every service and run prepare_dataset -> train_model once for today.
    `drift_demo`: then send a drifted export through prepare_dataset, for the data gate to stop.

    Exit codes: 0 done, 1 the job or a service failed, 2 a prerequisite is
    missing or a port is taken, 130 interrupted (services keep running).
    """
    config = config or LocalConfig()
    err = err or sys.stderr
    report = summary.Reporter(out)
    deadline = time.monotonic() + timeout
    try:
        stack.check_prerequisites()
        with single_up(config):
            # The raw export is in place before the scheduler can start a run that reads it.
            stack.start_services(config, report, deadline,
                                 before_airflow=lambda: job.seed_data_lake(config, rows, report))
            job.restore_serving(config, report, deadline)
            text = job.run(config, report, deadline, drift_demo_rows=rows if drift_demo else 0)
    except PrerequisiteError as exc:
        print(f"mlops up: {exc}", file=err, flush=True)
        return 2
    except (PlatformError, AirflowApiError, TimeoutError) as exc:
        print(f"mlops up: {exc}", file=err, flush=True)
        print(f"mlops up: logs are in {config.logs}; `mlops status` shows what runs, "
              "`make down` stops it", file=err, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\nmlops up: interrupted; started services keep running (`make down` stops them)",
              file=err, flush=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for humans, the traceback in a file
        log = _write_traceback(config)
        print(f"mlops up: unexpected error: {type(exc).__name__}: {exc}", file=err, flush=True)
        print(f"mlops up: the traceback is in {log}; `make down` stops the services", file=err, flush=True)
        return 1
    print(text, file=report.out, flush=True)
    return 0


def _write_traceback(config: LocalConfig) -> Path:
    config.logs.mkdir(parents=True, exist_ok=True)
    path = config.logs / "mlops-up.log"
    with open(path, "a") as log:
        log.write(f"\n=== {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC\n{traceback.format_exc()}")
    return path


@contextlib.contextmanager
def single_up(config: LocalConfig) -> Iterator[None]:
    """One `up` at a time per MLOPS_HOME, so two terminals cannot start two copies."""
    config.run.mkdir(parents=True, exist_ok=True)
    with open(config.run / "up.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PlatformError(
                f"another `mlops up` is running for {config.root}; wait for it or stop it"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def status(config: LocalConfig | None = None, out: IO[str] | None = None) -> int:
    """Print each service's and serving object's state; 0 when all are running and ready."""
    config = config or LocalConfig()
    out = out or sys.stdout
    rows = summary.collect_status(config)
    print(summary.format_status(rows), file=out)
    serving = job.serving_objects(config)
    if serving:
        mlflow_up = any(r.name == stack.MLFLOW and r.state == "running" and r.ready for r in rows)
        print("\n" + summary.format_serving(serving, models.version_aliases(config) if mlflow_up else None), file=out)
    memory = summary.collect_memory(_groups(config, serving))
    if memory:
        print("\n" + summary.format_memory(memory), file=out)
    if any(row.state == "running" for row in rows):
        password = config.airflow_password()
        if password and any(r.name == stack.API_SERVER and r.state == "running" for r in rows):
            print(f"\nAirflow UI: {config.airflow_url}  (user {AIRFLOW_ADMIN_USER}, password {password})",
                  file=out)
        print(f"Logs: {config.logs}", file=out)
    else:
        print("\nThe local platform is not running (start it with `make up`).", file=out)
    _warn_strays(config, out)
    services_ok = all(row.state == "running" and row.ready for row in rows)
    serving_ok = all(obj.get("running") and obj.get("ready") for obj in serving)
    return 0 if services_ok and serving_ok else 1


def _groups(config: LocalConfig, serving: list[dict]) -> list[tuple[str, int, float | None]]:
    """(owner, process group, leader start time) of every group this platform recorded."""
    groups = [(name, record.group, record.create_time)
              for name, record in processes.read_pid_records(config.run).items()]
    groups += [(f"{obj['namespace']}/{obj['name']}", int(obj.get("pgid") or obj["pid"]), obj.get("create_time"))
               for obj in serving if obj.get("pid")]
    return groups


def _warn_strays(config: LocalConfig, out: IO[str]) -> None:
    serving = [int(o["pid"]) for o in job.serving_records(config) if o.get("running") and o.get("pid")]
    strays = processes.stray_processes(config, serving)
    if strays:
        print(f"\nwarning: {len(strays)} process(es) of {config.root} have no pid file "
              f"(not stopped by `down`; stop them with `kill <pid>`):", file=out)
        for proc in strays[:10]:
            print(f"  {processes.describe(proc)}", file=out)


def down(config: LocalConfig | None = None, purge: bool = False, out: IO[str] | None = None,
         err: IO[str] | None = None) -> int:
    """Stop the processes this platform started (only those); `purge` also deletes its data."""
    config = config or LocalConfig()
    out = out or sys.stdout
    err = err or sys.stderr
    # Model servers and routers first: they load models through MLflow, and they were
    # started by Airflow tasks in sessions of their own (not descendants of a service).
    stopped_serving = _stop_serving(config, out, err)
    records = processes.read_pid_records(config.run)
    # All at once (SIGTERM, then SIGKILL after 10s): the triggerer alone takes ~12s to exit
    # gracefully, and nothing is lost by not waiting for Airflow before storage.
    ordered = [records[n] for n in (*reversed(stack.AIRFLOW_SERVICES), stack.MLFLOW, stack.AZURITE) if n in records]
    ordered += [r for n, r in records.items() if n not in stack.SERVICE_NAMES]
    stopped = {r.name for r in processes.stop_records(ordered, timeout=10.0)}
    for record in ordered:
        if record.name in stopped:
            print(f"stopped {record.name} (pid {record.pid})", file=out)
        elif left := processes.stop_orphans(record, timeout=10.0):
            print(f"stopped what was left of {record.name}: its leader (pid {record.pid}) was gone, its "
                  f"process group still ran pid {', '.join(map(str, left))}", file=out)
        else:
            print(f"{record.name} was not running (removed stale pid file)", file=out)
        processes.remove_pid_record(config.run, record.name)
    if not records and not stopped_serving:
        print("nothing to stop: no process of the local platform is running", file=out)
    _warn_strays(config, err)
    leftovers = [r.name for r in processes.read_pid_records(config.run).values() if processes.record_alive(r)]
    if leftovers:
        print(f"mlops down: could not stop {', '.join(leftovers)}", file=err)
        return 1
    if purge:
        try:
            removed = purge_data(config)
        except PlatformError as exc:
            print(f"mlops down: {exc}", file=err)
            return 1
        print(f"purged {removed}", file=out)
    elif records or stopped_serving:
        print(f"data kept in {config.root} (`make down PURGE=1` deletes it)", file=out)
        if stopped_serving:
            print("serving objects kept: `make up` starts them again on their ports", file=out)
    return 0


def _stop_serving(config: LocalConfig, out: IO[str], err: IO[str]) -> list[str]:
    from airflow_project.serving.targets.local import stop_local_serving

    if not (config.root / "serving").is_dir():
        return []
    try:
        stopped = stop_local_serving(config.root)
    except Exception as exc:  # noqa: BLE001 - the services must still be stopped
        print(f"mlops down: could not stop the local serving objects: {type(exc).__name__}: {exc}", file=err)
        return []
    for name in stopped:
        print(f"stopped serving {name}", file=out)
    return stopped


PURGED_FOLDERS = ("logs", "run", "azurite", "mlflow", "airflow", "serving")


def purge_data(config: LocalConfig) -> str:
    """Delete the platform's folders under root, and root itself when nothing else is left."""
    root = config.root.resolve()
    unsafe = {Path("/"), Path.home().resolve(), REPO_ROOT.resolve(), *REPO_ROOT.resolve().parents}
    if root in unsafe:
        raise PlatformError(f"refusing to purge {root}: MLOPS_HOME must be a folder of its own")
    for name in PURGED_FOLDERS:
        shutil.rmtree(root / name, ignore_errors=True)
    try:
        root.rmdir()
    except OSError:
        pass
    return str(root)
