"""What `mlops up` and `mlops status` print: progress lines, status tables, the sample
request with its curl line, and the final summary."""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
import psutil

from airflow_project.host.net import listens
from airflow_project.host.processes import command_line, group_members
from airflow_project.local import processes
from airflow_project.local.airflow_api import AirflowClient
from airflow_project.local.config import AIRFLOW_ADMIN_USER, LocalConfig
from airflow_project.local.errors import PlatformError
from airflow_project.local.models import (
    COMPARISON_METRICS,
    MODEL_METRICS,
    DataReport,
    ModelSummary,
    ShadowComparison,
)
from airflow_project.local.stack import (
    API_SERVER,
    HEALTH_COMPONENT,
    MLFLOW,
    SERVICE_NAMES,
    ServiceSpec,
    configured_ports,
    is_ready,
    service_urls,
)
from airflow_project.serving.constants import (
    GRAPH_NAME,
    PRIMARY_SERVICE,
    SERVED_MODEL_NAME,
    SHADOW_SERVICE,
    mirror_name,
    predict_path,
)
from airflow_project.wachttijden.categories import SAMPLE_ROW


class Reporter:
    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout
        self.t0 = time.monotonic()

    def elapsed(self) -> str:
        return duration(time.monotonic() - self.t0)

    def __call__(self, message: str) -> None:
        print(f"[{self.elapsed():>6}] {message}", file=self.out, flush=True)


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    table = [header, *rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:-1], widths)) + "  " + line[-1]
        for line in table
    )


@dataclass
class StatusRow:
    name: str
    state: str  # running | stopped | orphaned (leader gone, its process group still runs)
    pid: int | None
    port: int | None
    url: str | None
    ready: bool
    orphans: tuple[int, ...] = ()  # the orphaned group's pids
    holds_port: bool = False  # an orphan still listens on the service's port


def _orphaned_note(name: str, pids: list[int], holds: str = "") -> str:
    return (f"{name} is orphaned: its leader is gone, its process group still runs pid "
            f"{', '.join(map(str, pids))}{holds}; `make down` or `make up` stops it")


def format_status(rows: list[StatusRow]) -> str:
    table = _table(("SERVICE", "STATE", "PID", "PORT", "READY", "URL"), [
        (
            row.name, row.state, "-" if row.pid is None else str(row.pid),
            "-" if row.port is None else str(row.port),
            ("yes" if row.ready else "no") if row.state == "running" else "-",
            row.url or "-",
        )
        for row in rows
    ])
    notes = [_orphaned_note(row.name, row.orphans, f" and holds port {row.port}" if row.holds_port else "")
             for row in rows if row.state == "orphaned"]
    return "\n".join([table, *notes])


def collect_status(config: LocalConfig) -> list[StatusRow]:
    records = processes.read_pid_records(config.run)
    ports = configured_ports(config)
    urls = service_urls(config)
    alive = {name: processes.record_alive(record) for name, record in records.items()}
    orphaned = {name: processes.orphans(record) for name, record in records.items() if not alive[name]}
    health = None
    if alive.get(API_SERVER):
        with AirflowClient(config.airflow_url, AIRFLOW_ADMIN_USER, None) as client:
            health = client.health()
    rows: list[StatusRow] = []
    for name in SERVICE_NAMES:
        record = records.get(name)
        running = bool(record and alive.get(name))
        port = record.port if (record and running) else ports[name]
        if not running:
            ready = False
        elif name in HEALTH_COMPONENT:
            ready = ((health or {}).get(HEALTH_COMPONENT[name]) or {}).get("status") == "healthy"
        elif name == API_SERVER:
            ready = health is not None
        else:
            ready = is_ready(ServiceSpec(name, [], int(port or 0), "/health" if name == MLFLOW else None))
        left = orphaned.get(name) or []
        rows.append(StatusRow(
            name=name, state="running" if running else "orphaned" if left else "stopped",
            pid=record.pid if (record and running) else None, port=port,
            url=urls[name], ready=ready, orphans=tuple(p.pid for p in left),
            holds_port=port is not None and any(listens(p.pid, port) for p in left),
        ))
    return rows


@dataclass(frozen=True)
class ProcessMemory:
    owner: str  # the service or serving object whose process group it is in
    pid: int
    rss: int  # bytes
    command: str


def collect_memory(groups: Iterable[tuple[str, int, float | None]]) -> list[ProcessMemory]:
    """Every live process of the given groups `(owner, pgid, leader start time)`, with its RSS."""
    rows = []
    for owner, pgid, started in groups:
        for proc in group_members(pgid, started):
            try:
                rows.append(ProcessMemory(owner, proc.pid, proc.memory_info().rss, command_line(proc, 70)))
            except psutil.Error:
                continue
    return rows


def _mib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def format_memory(rows: list[ProcessMemory]) -> str:
    """RSS per process and in total (the README's memory budget is this total at rest)."""
    table = _table(("PROCESS", "PID", "RSS", "COMMAND"),
                   [(row.owner, str(row.pid), _mib(row.rss), row.command) for row in rows])
    total = sum(row.rss for row in rows)
    return f"{table}\nTotal RSS: {_mib(total)} in {len(rows)} processes"


def _argv_value(obj: dict[str, Any], flag: str) -> str | None:
    argv = [str(a) for a in obj.get("argv") or []]
    return next((argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag), None)


def served_version(obj: dict[str, Any]) -> str | None:
    """The model version a serving record's predictor loads (its `--model-uri`), None for a
    router or an unpinned URI."""
    uri = _argv_value(obj, "--model-uri") or ""
    version = uri.rsplit("/", 1)[-1] if uri.startswith("models:/") else ""
    return version if version.isdigit() else None


def listen_address(obj: dict[str, Any]) -> str:
    """Where a serving object listens: the `--host` of its argv (the local controller passes
    127.0.0.1) with its port; without one, what its process has bound (KServe's model server
    binds 0.0.0.0, kserve/protocol/rest/server.py); '-' when neither is known."""
    port = obj.get("port") or urlsplit(str(obj.get("url") or "")).port
    host = _argv_value(obj, "--host")
    if host is None and obj.get("running") and obj.get("pid") and port:
        host = bound_host(int(obj["pid"]), int(port))
    return f"{host}:{port}" if host and port else "-"


def bound_host(pid: int, port: int) -> str | None:
    """The address process `pid` (or a descendant) listens on at `port`, None when it does not."""
    try:
        proc = psutil.Process(pid)
        for member in (proc, *proc.children(recursive=True)):
            for conn in member.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                    return str(conn.laddr.ip)
    except (psutil.Error, OSError):
        return None
    return None


def _routed_urls(obj: dict[str, Any]) -> list[str]:
    """The predictor URLs a router sends to: `services` of its graph file (`--graph`)."""
    graph = _argv_value(obj, "--graph")
    try:
        services = json.loads(Path(graph).read_text()).get("services") or {} if graph else {}
    except (OSError, ValueError, AttributeError):
        return []
    return [str(url).rstrip("/") for url in services.values()]


def _versions_text(obj: dict[str, Any], by_url: dict[str, str]) -> str:
    """A predictor's version; a router's: the versions it routes to (`v2,v1`)."""
    version = served_version(obj)
    if version is not None:
        return f"v{version}"
    return ",".join(f"v{v}" for url in _routed_urls(obj) if (v := by_url.get(url))) or "-"


def format_serving(objects: list[dict[str, Any]], aliases: dict[str, list[str]] | None = None) -> str:
    """The serving part of `mlops status`: one line per InferenceService / graph router, with
    the version it serves (a router: those it routes to), that version's aliases now
    (`aliases`: {version: [alias]}; None when the registry did not answer) and where it listens."""
    by_url = {str(o.get("url") or "").rstrip("/"): v for o in objects if (v := served_version(o))}

    def alias_text(obj: dict[str, Any]) -> str:
        version = served_version(obj)
        if version is None:
            return "-"
        if aliases is None:
            return "?"
        return ",".join(aliases.get(version, [])) or "-"

    table = _table(("SERVING", "KIND", "STATE", "PID", "LISTEN", "READY", "VERSION", "ALIAS", "URL"), [
        (
            _object_name(obj), str(obj.get("kind", "?")),
            "running" if obj.get("running") else "orphaned" if obj.get("orphans") else "stopped",
            str(obj.get("pid") or "-") if obj.get("running") else "-",
            listen_address(obj),
            _ready_text(obj) if obj.get("running") else "-",
            _versions_text(obj, by_url), alias_text(obj),
            str(obj.get("url") or "-"),
        )
        for obj in objects
    ])
    if aliases is None and any(served_version(o) for o in objects):
        table += "\n(aliases unknown: the MLflow registry did not answer)"
    notes = [_orphaned_note(_object_name(obj), obj["orphans"])
             for obj in objects if not obj.get("running") and obj.get("orphans")]
    notes += [f"{_object_name(obj)} {'degraded' if obj.get('degraded') else 'not ready'}: {obj['reason']}"
              for obj in objects if obj.get("running") and obj.get("reason")]
    notes += [capture_note(obj) for obj in objects if obj.get("capture")]
    return "\n".join([table, *notes])


def capture_note(obj: dict[str, Any]) -> str:
    """The capture process's counts (monitoring.capture_process): what reached the data lake, what was dropped."""
    c = obj["capture"]
    error = f"; last upload error: {c['last_error']}" if c.get("last_error") and c.get("buffered") else ""
    return (f"{_object_name(obj)}: {c.get('written', 0):,} predictions written to {c.get('container')}, "
            f"{c.get('buffered', 0):,} buffered, {c.get('dropped', 0):,} dropped{error}")


def _ready_text(obj: dict[str, Any]) -> str:
    return "degraded" if obj.get("degraded") else "yes" if obj.get("ready") else "no"


def _object_name(obj: dict[str, Any]) -> str:
    return f"{obj.get('namespace', '?')}/{obj.get('name', '?')}"


def format_metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k}={metrics[k]:.3f}" for k in MODEL_METRICS if k in metrics) or "(no metrics)"


@dataclass(frozen=True)
class Endpoints:
    """Base URLs of what `up` deployed, and the versions behind them."""

    predictor: str
    graph: str
    shadow: str
    mirror: str
    primary_version: int
    shadow_version: int
    namespace: str
    deployed: bool = True  # False: found running, the mirroring DAG was skipped

    @property
    def predictor_v1(self) -> str:
        return self.predictor + predict_path(SERVED_MODEL_NAME)

    @property
    def shadow_v1(self) -> str:
        return self.shadow + predict_path(SERVED_MODEL_NAME)

    @property
    def mirror_v1(self) -> str:
        return self.mirror + predict_path(SERVED_MODEL_NAME)


def sample_request() -> dict[str, Any]:
    return {"instances": [dict(SAMPLE_ROW)]}


def curl_command(url: str, body: dict[str, Any]) -> str:
    """A ready-to-paste curl for a JSON POST (shell-quoted)."""
    data = json.dumps(body, ensure_ascii=False)
    return f"curl -s -X POST {shlex.quote(url)} -H 'Content-Type: application/json' -d {shlex.quote(data)}"


@dataclass(frozen=True)
class TryIt:
    name: str
    url: str
    curl: str
    answer: str  # the body the service returned


def ask(url: str, body: dict[str, Any]) -> str:
    try:
        response = httpx.post(url, json=body, timeout=30.0, trust_env=False)
    except httpx.HTTPError as exc:
        raise PlatformError(f"POST {url} failed: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise PlatformError(f"POST {url} answered HTTP {response.status_code}: {response.text[:300]}")
    try:
        return json.dumps(response.json(), ensure_ascii=False)
    except ValueError:
        return response.text.strip()


def try_it(endpoints: Endpoints) -> list[TryIt]:
    """Send the sample request to the predictor, the graph and the mirror router, as the printed
    curl would."""
    body = sample_request()
    out = []
    for name, url in (("predictor", endpoints.predictor_v1), ("graph", endpoints.graph + "/"),
                      ("mirror", endpoints.mirror_v1)):
        out.append(TryIt(name, url, curl_command(url, body), ask(url, body)))
    return out


def format_serving_summary(endpoints: Endpoints, demo: list[TryIt],
                           comparison: ShadowComparison | None) -> list[str]:
    state = "deployed" if endpoints.deployed else "already running"
    lines = [
        (f"  Predictor   {endpoints.predictor_v1}   (champion, version {endpoints.primary_version}; "
         f"InferenceService {endpoints.namespace}/{PRIMARY_SERVICE}, {state})"),
        (f"  Graph       {endpoints.graph}   (InferenceGraph {endpoints.namespace}/{GRAPH_NAME}: every request "
         f"to shadow and primary, the primary answers; any POST path)"),
        (f"  Mirror      {endpoints.mirror_v1}   (mirror router, what Istio's VirtualService mirror does: "
         f"the primary answers, a copy goes to the shadow without waiting; {endpoints.namespace}/"
         f"{mirror_name(PRIMARY_SERVICE)})"),
        (f"  Shadow      {endpoints.shadow_v1}   (version {endpoints.shadow_version}; "
         f"InferenceService {endpoints.namespace}/{SHADOW_SERVICE})"),
    ]
    if comparison is not None:
        shown = "  ".join(f"{k}={comparison.metrics[k]:.3f}" for k in COMPARISON_METRICS if k in comparison.metrics)
        lines.append(f"  Comparison  MLflow experiment {comparison.experiment}: {comparison.url}")
        if shown:
            lines.append(f"              {comparison.run_name + ': ' if comparison.run_name else ''}{shown}")
        if comparison.shadow_beat_primary:
            lines.append(shadow_beat_line(endpoints, comparison))
    lines.append("")
    lines.append("Try it (the answers are what up got just now):")
    for item in demo:
        lines.append(f"  {item.curl}")
        lines.append(f"  -> {item.answer}")
    return lines


def shadow_beat_line(endpoints: Endpoints, comparison: ShadowComparison) -> str:
    m = comparison.metrics
    return (f"  Note        the shadow (version {endpoints.shadow_version}) beat the champion (version "
            f"{endpoints.primary_version}) on these rows: mae_shadow {m.get('mae_shadow', float('nan')):.3f} < "
            f"mae_primary {m.get('mae_primary', float('nan')):.3f} (MLflow tag shadow_beat_primary=true); the "
            f"promotion rule kept the champion on its own hold-out and backtest: worth a look")


def format_data_report(data: DataReport | None, label: str = "Data") -> list[str]:
    """The data checks of an export the job prepared: its headline and the MLflow run."""
    if data is None:
        return []
    return [f"  {label:<10}  {data.export}: {data.headline}", f"              data checks: {data.url}"]


def final_summary(config: LocalConfig, password: str, models: list[ModelSummary], endpoints: Endpoints,
                  demo: list[TryIt], comparison: ShadowComparison | None, report: Reporter,
                  data: DataReport | None = None, drift_demo: DataReport | None = None,
                  mlflow_url: str | None = None, monitoring: list[str] | None = None) -> str:
    lines = [
        "",
        f"The local platform is up, the job has run and the champion is served (took {report.elapsed()}).",
        f"  Airflow UI  {config.airflow_url}   user {AIRFLOW_ADMIN_USER}   password {password}",
        f"  MLflow UI   {mlflow_url or config.mlflow_uri}   (training runs; models: {config.mlflow_uri}/#/models)",
        *format_data_report(data),
        *format_data_report(drift_demo, "Drift demo"),
    ]
    roles = ("primary", "shadow") if len(models) > 1 else ("primary and shadow",)
    for i, (model, role) in enumerate(zip(models, roles)):
        aliases = f" (alias: {', '.join(model.aliases)})" if model.aliases else ""
        estimator = f" {model.estimator}" if model.estimator else ""
        lines.append(f"  {'Model' if i == 0 else '':<10}  {model.name} version {model.version}{aliases}{estimator}"
                     f", served as {role}")
        lines.append(f"              {format_metrics(model.metrics)}")
        if model.decision:
            lines.append(f"              {model.decision}")
    lines += format_serving_summary(endpoints, demo, comparison)
    lines += ["", *monitoring] if monitoring else []
    lines += [
        "",
        f"  Logs        {config.logs}/ (services: <name>.log, tasks: airflow/, model servers: serving/)",
        "  Status      make status",
        "  Stop        make down   (keeps data; `make down PURGE=1` deletes it)",
    ]
    return "\n".join(lines)
