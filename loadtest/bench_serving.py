"""Serving benchmark: the same registered model behind different servers, one load generator.

    python -m loadtest.bench_serving [--rounds 3] [--quick] [--tracking-uri URI --model-uri URI]

What runs (all subprocesses on 127.0.0.1, free ports):
- an MLflow tracking server (SQLite, proxied local artifacts) with `wachttijden`
  registered by `airflow_project.registry.train_and_register` on synthetic data
  (or an existing server/model with --tracking-uri/--model-uri);
- (a) this predictor (`python -m airflow_project.serving`), twice: primary and shadow;
- (b) MLServer 1.7 with its MLflow runtime (what KServe runs for `modelFormat: mlflow`)
  from its own virtualenv `.tools/mlserver`, on the registered version downloaded as
  KServe's storage initializer does; if that runtime cannot load the model, MLServer's
  sklearn runtime on the same fitted pipeline (the report says which);
- (c) the HTTP floor: a bare ASGI app answering a constant JSON (`loadtest.floor_app`);
- the graph router in `graph` mode (KServe Sequence [shadow Soft, primary Hard]) and in
  `mirror` mode (primary answers, shadow gets a fire-and-forget copy).

Method: one load generator (`loadtest.loadgen`, closed loop, keep-alive, same
pre-encoded payloads from `loadtest.payloads` for every target), two levels:
- `throughput`: fixed concurrency (default 16): saturates the server, gives requests/s
  and the latency under that load;
- `latency`: concurrency 1: the unloaded latency, where hop costs (router) show.
With two or more CPUs the generator is pinned to one CPU and every server to the others,
so each server gets the same CPU and never competes with the generator. Each round runs
every (target, level) cell once, interleaved; the report gives the median over rounds
and the spread (a noise indicator: other jobs on the machine).

Writes `reports/bench-serving.md` and `reports/bench-serving.json`. Not a test: targets
are reported as met or missed, the exit code is 0 unless the benchmark could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtest import payloads

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODEL_NAME = "wachttijden"
MLSERVER_VENV = REPO / ".tools" / "mlserver"
MLSERVER_VERSION = "1.7.1"

# The graph's latency ratios (mirror p50 <= 1.15x direct, Sequence p50 <= 2.2x direct) are
# retired: both budgets were below one bare HTTP request on this machine. They are still
# reported (info); what mirroring must deliver is measured by `loadtest.bench_mirror`.
TARGETS = {
    "throughput": {"predictor_over_mlserver_rps": 3.0, "predictor_over_floor_rps": 0.5},
}


# --------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    ready_path: str
    log: Path
    env: dict[str, str] = field(default_factory=_env)
    cwd: Path | None = None
    cpus: set[int] | None = None
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        argv = list(self.argv)
        taskset = shutil.which("taskset")
        if self.cpus and taskset:  # the affinity is inherited by every child (MLServer's workers)
            argv = [taskset, "--cpu-list", ",".join(map(str, sorted(self.cpus))), *argv]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                         cwd=self.cwd or REPO, start_new_session=True)
        if self.cpus and not taskset:
            os.sched_setaffinity(self.proc.pid, self.cpus)
        return self

    def wait_ready(self, timeout: float = 180.0) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail(self.log)}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f}s:\n{tail(self.log)}")

    def stop(self) -> None:
        stop_all([self])


def stop_all(servers: list[Server], timeout: float = 15.0) -> None:
    """SIGTERM every server's process group at once, reap, SIGKILL what is left after `timeout`.

    (Polling the group with killpg(pid, 0) would wait on our own unreaped zombie leaders.)
    """
    running = [s.proc for s in servers if s.proc is not None and s.proc.poll() is None]
    for proc in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running and time.monotonic() < deadline:
        running = [p for p in running if p.poll() is None]
        time.sleep(0.1)
    for proc in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    for s in servers:  # children left behind in a group whose leader exited (MLServer workers)
        if s.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(s.proc.pid, signal.SIGKILL)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def post_json(url: str, body: Any, timeout: float = 10.0) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


# --------------------------------------------------------------------------- model
def start_mlflow(work: Path, cpus: set[int] | None = None) -> Server:
    """The benchmark's MLflow server, as the local platform runs it: without MLflow's job runner
    (seven huey consumers polling, ~40 % of a core, during the measurements) and on the
    servers' CPU(s), away from the load generator's."""
    from airflow_project.local.stack import MLFLOW_JOBS_OFF
    from airflow_project.settings import NO_TELEMETRY_ENV

    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    data = work / "mlflow"
    data.mkdir(parents=True)
    port = free_port()
    return Server("mlflow", [mlflow_bin, "server", "--backend-store-uri", f"sqlite:///{data}/mlflow.db",
                             "--artifacts-destination", str(data / "artifacts"), "--serve-artifacts",
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                  port, "/health", work / "mlflow.log", env=_env(**MLFLOW_JOBS_OFF, **NO_TELEMETRY_ENV),
                  cwd=data, cpus=cpus).start()


def register_model(tracking_uri: str, rows: int = 20_000) -> str:
    """Train on synthetic data and register `wachttijden` the way the train DAG does."""
    from airflow_project.registry import train_and_register
    from airflow_project.wachttijden import dataset, synthetic
    from airflow_project.wachttijden.training import TrainingConfig

    raw = synthetic.to_raw_bytes(synthetic.generate(synthetic.SyntheticConfig(rows=rows)))
    frame, _ = dataset.prepare(raw, "bench")
    result = train_and_register(frame, TrainingConfig(), tracking_uri=tracking_uri, source="bench-serving")
    return result.model_uri


def download_model(tracking_uri: str, model_uri: str, dst: Path) -> Path:
    """Like KServe's storage initializer: the registered version's files in a local folder."""
    import mlflow
    from mlflow.artifacts import download_artifacts

    mlflow.set_tracking_uri(tracking_uri)
    dst.mkdir(parents=True, exist_ok=True)
    return Path(download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))


# --------------------------------------------------------------------------- MLServer
def mlserver_pins() -> list[str]:
    """MLServer and its runtimes, with the model's libraries at the training versions."""
    pins = [f"mlserver=={MLSERVER_VERSION}", f"mlserver-mlflow=={MLSERVER_VERSION}",
            f"mlserver-sklearn=={MLSERVER_VERSION}",
            # MLServer 1.7's inference workers call asyncio.get_event_loop() outside a loop;
            # uvloop >= 0.22 raises there and every worker dies. 0.21 is what 1.7.1 shipped with.
            "uvloop==0.21.0"]
    from airflow_project.registry import model_pip_requirements

    return pins + model_pip_requirements()


def ensure_mlserver(venv: Path = MLSERVER_VENV) -> Path:
    """Create `.tools/mlserver` (uv venv + pinned install) unless it already has them."""
    python = venv / "bin" / "python"
    mlserver = venv / "bin" / "mlserver"
    pins = mlserver_pins()
    stamp = venv / ".pins"
    if mlserver.exists() and stamp.exists() and stamp.read_text() == "\n".join(pins):
        return mlserver
    uv = shutil.which("uv")
    if uv is None:
        raise RuntimeError("uv not found: `make uv` installs it")
    if not python.exists():
        subprocess.run([uv, "venv", "--python", "3.11", str(venv)], check=True)
    subprocess.run([uv, "pip", "install", "--python", str(python), *pins], check=True)
    stamp.write_text("\n".join(pins))
    return mlserver


def mlserver_server(work: Path, model_dir: Path, runtime: str, cpus: set[int] | None,
                    extra_env: dict[str, str] | None = None) -> Server:
    """MLServer with KServe's defaults for the runtime (one inference worker process)."""
    repo = work / f"mlserver-{runtime}"
    (repo / MODEL_NAME).mkdir(parents=True, exist_ok=True)
    port, grpc, metrics = free_port(), free_port(), free_port()
    (repo / "settings.json").write_text(json.dumps(
        {"host": "127.0.0.1", "http_port": port, "grpc_port": grpc, "metrics_port": metrics}))
    implementation = {"mlflow": "mlserver_mlflow.MLflowRuntime", "sklearn": "mlserver_sklearn.SKLearnModel"}
    (repo / MODEL_NAME / "model-settings.json").write_text(json.dumps(
        {"name": MODEL_NAME, "implementation": implementation[runtime], "parameters": {"uri": str(model_dir)}}))
    env = _env(**(extra_env or {}))
    env.pop("PYTHONPATH", None)
    return Server(f"mlserver-{runtime}", [str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(repo)],
                  port, f"/v2/models/{MODEL_NAME}/ready", work / f"mlserver-{runtime}.log",
                  env=env, cwd=repo, cpus=cpus)


def start_mlserver(work: Path, model_dir: Path, cpus: set[int] | None) -> tuple[Server, dict[str, str]]:
    """MLflow runtime first (default env); the sklearn runtime when it cannot load the model."""
    probe = payloads.v2_body(payloads.pool(1)[0])
    attempts: list[str] = []
    server = mlserver_server(work, model_dir, "mlflow", cpus).start()
    try:
        server.wait_ready(timeout=120)
        status, body = post_json(f"{server.url}/v2/models/{MODEL_NAME}/infer", probe)
        if status == 200:
            return server, {"runtime": "mlserver_mlflow.MLflowRuntime", "format": "MLflow model (skops)",
                            "note": "MLflow runtime loaded the registered skops model unchanged."}
        attempts.append(f"MLflow runtime answered {status}: {str(body)[:300]}")
    except (RuntimeError, TimeoutError) as exc:
        attempts.append(f"MLflow runtime did not load the model: {str(exc)[-800:]}")
    server.stop()
    # Fallback: the same fitted pipeline, saved for MLServer's sklearn runtime (joblib).
    import joblib
    import mlflow.sklearn

    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
    pipeline = mlflow.sklearn.load_model(str(model_dir))
    sk_dir = work / "sklearn-model"
    sk_dir.mkdir(exist_ok=True)
    joblib.dump(pipeline, sk_dir / "model.joblib")
    server = mlserver_server(work, sk_dir / "model.joblib", "sklearn", cpus).start().wait_ready(120)
    status, body = post_json(f"{server.url}/v2/models/{MODEL_NAME}/infer", probe)
    if status != 200:
        raise RuntimeError(f"MLServer sklearn runtime answered {status}: {body}")
    return server, {"runtime": "mlserver_sklearn.SKLearnModel", "format": "joblib (same fitted pipeline)",
                    "note": "FALLBACK: " + " | ".join(attempts)}


# --------------------------------------------------------------------------- load
@dataclass
class Cell:
    target: str
    level: str
    url: str
    bodies: Path
    expect: str
    concurrency: int


def cpu_split(no_pin: bool = False) -> tuple[set[int] | None, set[int] | None, dict[str, Any]]:
    """(generator CPUs, server CPUs, description): the generator on the first usable CPU and
    every server on the others, when there are two or more."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or no_pin:
        return None, None, {"generator": [], "servers": [],
                            "description": "none (generator and servers share all CPUs)"}
    desc = (f"load generator on CPU {cpus[0]}, every server process on CPU(s) {','.join(map(str, cpus[1:]))} "
            "(each server alone on its CPU(s) while measured; idle servers stay up)")
    return {cpus[0]}, set(cpus[1:]), {"generator": cpus[:1], "servers": cpus[1:], "description": desc}


def model_under_test(work: Path, servers: list[Server], tracking_uri: str | None = None,
                     model_uri: str | None = None, cpus: set[int] | None = None) -> tuple[str, str]:
    """(tracking URI, model URI pinned by number): the given registered model, or an MLflow
    server started here (on `cpus`, the servers' CPUs) with `wachttijden` registered on
    synthetic data."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from airflow_project.registry import model_uri as registry_model_uri
    from airflow_project.serving.predictor import resolve_model_uri

    if tracking_uri:
        model_uri = model_uri or f"models:/{MODEL_NAME}@champion"
    else:
        mlflow_server = start_mlflow(work, cpus)
        servers.append(mlflow_server)
        mlflow_server.wait_ready(120)
        tracking_uri = mlflow_server.url
        print("registering a model trained on synthetic data", flush=True)
        model_uri = register_model(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    name, version = resolve_model_uri(model_uri, MlflowClient())
    return tracking_uri, registry_model_uri(version, name)


def predictor_server(label: str, model_uri: str, tracking_uri: str, work: Path,
                     cpus: set[int] | None) -> Server:
    port = free_port()
    return Server(label, [sys.executable, "-m", "airflow_project.serving", "--model-uri", model_uri,
                          "--name", MODEL_NAME, "--port", str(port), "--tracking-uri", tracking_uri],
                  port, f"/v2/models/{MODEL_NAME}/ready", work / f"{label}.log", cpus=cpus)


def router_server(label: str, config: dict[str, Any], work: Path, cpus: set[int] | None) -> Server:
    """The local graph router on a graph file with `config` (see `serving.router`)."""
    graph_file = work / f"{label}.json"
    graph_file.write_text(json.dumps(config))
    port = free_port()
    return Server(label, [sys.executable, "-m", "airflow_project.serving.router", "--graph", str(graph_file),
                          "--port", str(port)], port, "/readyz", work / f"{label}.log", cpus=cpus)


def run_rounds(cells: list[Cell], args: argparse.Namespace, gen_cpus: set[int] | None) -> dict[str, dict[str, list[dict]]]:
    """Every cell once per round, interleaved: {level: {target: [result per round]}}."""
    raw: dict[str, dict[str, list[dict]]] = {}
    for cell in cells:
        raw.setdefault(cell.level, {}).setdefault(cell.target, [])
    for rnd in range(args.rounds):
        for cell in cells:
            result = run_cell(cell, args.duration, args.warmup, gen_cpus)
            raw[cell.level][cell.target].append(result)
            print(f"round {rnd + 1}/{args.rounds} {cell.level:<10} {cell.target:<15} "
                  f"{result['throughput_rps']:>8.0f} req/s  p50 {result['latency_ms']['p50']:.3f} ms  "
                  f"p99 {result['latency_ms']['p99']:.3f} ms  errors {result['errors']}  "
                  f"load {result['loadavg_1m_before']}", flush=True)
    return raw


def run_cell(cell: Cell, duration: float, warmup: float, gen_cpus: set[int] | None) -> dict:
    argv = [sys.executable, "-m", "loadtest.loadgen", "--url", cell.url, "--bodies", str(cell.bodies),
            "--concurrency", str(cell.concurrency), "--duration", str(duration), "--warmup", str(warmup),
            "--expect", cell.expect]
    for cpu in sorted(gen_cpus or ()):
        argv += ["--cpu", str(cpu)]
    load_before = os.getloadavg()[0]
    proc = subprocess.run(argv, capture_output=True, text=True, env=_env(), cwd=REPO,
                          timeout=duration + warmup + 120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed on {cell.target}: {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["loadavg_1m_before"] = round(load_before, 2)
    return result


def summarize(results: list[dict]) -> dict:
    """Median over rounds, with the spread of throughput and p50 (max-min over median)."""
    def med(values: list[float]) -> float:
        return round(statistics.median(values), 4)

    rps = [r["throughput_rps"] for r in results]
    p50 = [r["latency_ms"]["p50"] for r in results]
    return {
        "rounds": len(results),
        "throughput_rps": round(statistics.median(rps), 1),
        "p50_ms": med(p50),
        "p95_ms": med([r["latency_ms"]["p95"] for r in results]),
        "p99_ms": med([r["latency_ms"]["p99"] for r in results]),
        "mean_ms": med([r["latency_ms"]["mean"] for r in results]),
        "requests": sum(r["requests"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "error_samples": [e for r in results for e in r["error_samples"]][:5],
        "rps_spread_pct": round(100 * (max(rps) - min(rps)) / statistics.median(rps), 1) if len(rps) > 1 else None,
        "p50_spread_pct": round(100 * (max(p50) - min(p50)) / statistics.median(p50), 1) if len(p50) > 1 else None,
        "rps_per_round": rps,
        "p50_per_round": p50,
    }


def _metric(result: dict, metric: str) -> float:
    return result["throughput_rps"] if metric == "rps" else result["latency_ms"][metric]


def per_round_ratios(nums: list[dict], dens: list[dict], num_metric: str, den_metric: str) -> list[float]:
    """num / den within each round (cells of a round ran minutes apart at most); rounds
    whose denominator is 0 are left out."""
    return [_metric(n, num_metric) / _metric(d, den_metric) for n, d in zip(nums, dens) if _metric(d, den_metric)]


RATIO_SPECS = [
    # name, level, numerator (target, metric), denominator (target, metric), op, bound, how
    ("predictor / MLServer throughput", "throughput", ("predictor-v2", "rps"), ("mlserver-v2", "rps"),
     ">=", 3.0, "V2 pandas body, same payloads"),
    ("predictor p99 / MLServer p99", "throughput", ("predictor-v2", "p99"), ("mlserver-v2", "p99"),
     "<=", 1.0, "no worse p99"),
    ("predictor / HTTP floor throughput", "throughput", ("predictor-v2", "rps"), ("floor", "rps"),
     ">=", 0.5, "V2 body"),
    ("mirror p50 / direct p50 (info, target retired)", "latency", ("graph-mirror", "p50"),
     ("predictor-v1", "p50"), None, None, "V1 body, concurrency 1"),
    ("sequence p50 / direct p50 (info, target retired)", "latency", ("graph-sequence", "p50"),
     ("predictor-v1", "p50"), None, None, "V1 body, concurrency 1"),
    ("predictor V1 / HTTP floor throughput (info)", "throughput", ("predictor-v1", "rps"), ("floor", "rps"),
     None, None, ""),
    ("mirror p50 / direct p50 under load (info)", "throughput", ("graph-mirror", "p50"), ("predictor-v1", "p50"),
     None, None, ""),
    ("sequence p50 / direct p50 under load (info)", "throughput", ("graph-sequence", "p50"),
     ("predictor-v1", "p50"), None, None, ""),
    ("predictor / MLServer p50 at concurrency 1 (info)", "latency", ("predictor-v2", "p50"),
     ("mlserver-v2", "p50"), None, None, ""),
]


def ratios(raw: dict[str, dict[str, list[dict]]]) -> list[dict]:
    """Each ratio per round (both cells of a round ran minutes apart at most), then the median.

    Per-round ratios cancel much of the machine's slow drift (other jobs starting and
    stopping); the range over rounds is reported next to the median.
    """
    rows = []
    for name, level, (num_t, num_m), (den_t, den_m), op, bound, how in RATIO_SPECS:
        nums, dens = raw[level].get(num_t, []), raw[level].get(den_t, [])
        per_round = per_round_ratios(nums, dens, num_m, den_m)
        if not per_round:
            continue
        value = statistics.median(per_round)
        met = None if op is None else (value >= bound if op == ">=" else value <= bound)
        rounds_met = None if op is None else sum((v >= bound) if op == ">=" else (v <= bound) for v in per_round)
        rows.append({"name": name, "value": round(value, 3), "min": round(min(per_round), 3),
                     "max": round(max(per_round), 3), "per_round": [round(v, 3) for v in per_round],
                     "target": "-" if op is None else f"{op} {bound}", "met": met, "rounds_met": rounds_met,
                     "level": level, "how": how})
    return rows


# --------------------------------------------------------------------------- environment
def version_of(dist: str, python: Path | None = None) -> str:
    """A distribution's version in this interpreter (or in `python`'s), "-" when missing."""
    if python is None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "-"
    if not python.exists():
        return "-"
    out = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or "-"


def git_head() -> str:
    """The short commit the report was made from ("" outside a checkout)."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO,
                          check=False).stdout.strip()


def environment(pinning: dict[str, Any]) -> dict[str, Any]:
    cpu_model = "-"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ml_py = MLSERVER_VENV / "bin" / "python"
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host_cpus": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "git": git_head(),
        "pinning": pinning,
        "versions": {
            "kserve": version_of("kserve"), "mlflow": version_of("mlflow"), "scikit-learn": version_of("scikit-learn"),
            "uvicorn": version_of("uvicorn"), "fastapi": version_of("fastapi"), "httpx": version_of("httpx"),
            "uvloop": version_of("uvloop"), "httptools": version_of("httptools"),
            "mlserver": version_of("mlserver", ml_py), "mlserver-mlflow": version_of("mlserver-mlflow", ml_py),
            "mlserver-sklearn": version_of("mlserver-sklearn", ml_py),
            "mlflow (MLServer venv)": version_of("mlflow", ml_py),
        },
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


# --------------------------------------------------------------------------- report
LABELS = {
    "floor": "(c) HTTP floor (bare ASGI, constant JSON)",
    "predictor-v2": "(a) predictor, V2 pandas",
    "mlserver-v2": "(b) MLServer, V2 pandas",
    "predictor-v1": "(a) predictor, V1 (= direct)",
    "graph-sequence": "graph, Sequence (KServe semantics)",
    "graph-mirror": "graph, mirror mode",
}


def report_heading(title: str, report: dict, module: str) -> list[str]:
    """A benchmark report's first lines: what, when, which code and model, made by what."""
    env = report["environment"]
    return [
        f"# {title}",
        "",
        (f"{env['date']}, git {env['git']}, model `{report['model']['uri']}`. "
         f"Generated by `make bench` (`python -m {module}`); not a test."),
        "",
    ]


def markdown(report: dict) -> str:
    env, cfg = report["environment"], report["config"]
    lines = [
        *report_heading("Serving benchmark", report, "loadtest.bench_serving"),
        "## Targets",
        "",
        ("Median of the per-round ratios (a ratio is taken within one round, then the median over rounds); "
        "*range* is min - max over rounds; *met* judges the median."),
        "",
        "| ratio | median | range | target | met | rounds met | level | how |",
        "|---|---:|---|---|---|---|---|---|",
    ]
    n_rounds = report["config"]["rounds"]
    for r in report["ratios"]:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "**NO**")
        rounds_met = "-" if r["rounds_met"] is None else f"{r['rounds_met']}/{n_rounds}"
        lines.append(f"| {r['name']} | {r['value']:.2f} | {r['min']:.2f} - {r['max']:.2f} | {r['target']} | "
                     f"{met} | {rounds_met} | {r['level']} | {r['how']} |")
    for level, title in (("throughput", f"Throughput level: concurrency {cfg['throughput_concurrency']}"),
                         ("latency", "Latency level: concurrency 1")):
        lines += ["", f"## {title}", "",
                  "| target | req/s | p50 ms | p95 ms | p99 ms | errors | req/s spread | p50 spread |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, s in report["summary"][level].items():
            spread = (f"{s['rps_spread_pct']}%" if s["rps_spread_pct"] is not None else "-",
                      f"{s['p50_spread_pct']}%" if s["p50_spread_pct"] is not None else "-")
            lines.append(f"| {LABELS.get(name, name)} | {s['throughput_rps']:.0f} | {s['p50_ms']:.3f} | "
                         f"{s['p95_ms']:.3f} | {s['p99_ms']:.3f} | {s['errors']} | {spread[0]} | {spread[1]} |")
    ml = report["mlserver"]
    t, lat = report["summary"]["throughput"], report["summary"]["latency"]
    # `--only` runs a subset of the targets: the derived lines need all of them.
    if all(k in t for k in ("floor", "predictor-v1", "predictor-v2", "mlserver-v2", "graph-mirror", "graph-sequence")):
        hop = lat["graph-mirror"]["p50_ms"] - lat["predictor-v1"]["p50_ms"]
        seq = lat["graph-sequence"]["p50_ms"] - 2 * lat["predictor-v1"]["p50_ms"]
        lines += [
            "",
            "## Derived",
            "",
            (f"- The generator is not the bottleneck: it drove the floor at {t['floor']['throughput_rps']:.0f} "
            f"req/s, {t['floor']['throughput_rps'] / max(t['predictor-v2']['throughput_rps'], 1):.1f}x the "
            "predictor's throughput, on the same CPU budget."),
            (f"- Router hop (mirror p50 - direct p50, concurrency 1): {hop:.3f} ms per request; "
            f"Sequence overhead beyond two direct calls: {seq:.3f} ms."),
            (f"- Server time per request at saturation (1 / throughput; all server processes share "
            f"{len(env['pinning']['servers']) or 'all'} CPU): floor {1000 / t['floor']['throughput_rps']:.3f} ms, predictor V2 "
            f"{1000 / t['predictor-v2']['throughput_rps']:.3f} ms, predictor V1 "
            f"{1000 / t['predictor-v1']['throughput_rps']:.3f} ms, MLServer "
            f"{1000 / t['mlserver-v2']['throughput_rps']:.3f} ms, graph Sequence "
            f"{1000 / t['graph-sequence']['throughput_rps']:.3f} ms, graph mirror "
            f"{1000 / t['graph-mirror']['throughput_rps']:.3f} ms."),
        ]
    lines += [
        "",
        "## How it was measured",
        "",
        ("- One load generator for every target: `loadtest/loadgen.py` (asyncio + uvloop + httptools, "
        "closed loop, HTTP/1.1 keep-alive, pre-encoded bodies, every request timed with perf_counter_ns). "
        "Locust is not used here: it rounds sub-100 ms times to whole ms and its own CPU cost would cap the floor."),
        (f"- Same payloads for every target: {cfg['pool']} requests of {cfg['rows']} row(s) drawn from the real "
        f"NZa category lists (`loadtest/payloads.py`, fixed seed, ~2% unseen SPECIALISME); V2 pandas bodies "
        f"for predictor/MLServer/floor, the same rows as V1 bodies for the direct-vs-graph comparison."),
        (f"- {cfg['rounds']} round(s); every round runs each (target, level) cell once, interleaved; "
        f"{cfg['warmup_s']} s warm-up then {cfg['duration_s']} s measured per cell. Tables show the median over "
        f"rounds; *spread* is (max - min) / median over rounds: the noise of this machine during the run."),
        f"- CPU pinning: {env['pinning']['description']}",
        (f"- (b) MLServer {env['versions']['mlserver']}: runtime `{ml['runtime']}`, model format {ml['format']}, "
        f"KServe's defaults (one inference worker process). {ml['note']}"),
        ("- Predictor, floor and router run the same HTTP stack: uvicorn + uvloop + httptools, with "
        "`serving.bounded_http` (one socket write per response instead of uvicorn's two, and bounded reads)."),
        ("- MLflow (when started here) runs without its job runner, on the servers' CPU(s); "
         "it is idle while the cells are measured."),
        ("- (a) predictor: KServe ModelServer, one process; answers from a table of the pipeline's predictions "
        "over every category combination (identical to `pipeline.predict`), so per request it does no sklearn work; "
        "it writes one flushed JSON log line per prediction (its access record) and updates KServe's latency "
        "histograms. MLServer decodes to a DataFrame, enforces the MLflow signature and runs the sklearn pipeline per request."),
        ("- Graph: the local router (`airflow_project.serving.router`) in front of two predictor processes "
        "(primary and shadow, same model version): `graph` mode runs the KServe Sequence "
        "[shadow Soft, primary Hard] (two calls in series), `mirror` mode calls the primary and sends the "
        "shadow a copy without waiting. *Direct* is the primary predictor without the router."),
        (f"- Load average (1 min) at start {env['loadavg_start'][0]}, at end {report['loadavg_end'][0]}; "
        f"per cell in the JSON (`loadavg_1m_before`)."),
        "",
        "## Environment",
        "",
        f"- {env['host_cpus']} CPUs ({env['cpu_model']}), {env['platform']}, Python {env['python']}",
        "- " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        "",
        "Raw per-round numbers: `reports/bench-serving.json`.",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- harness
def add_harness_args(p: argparse.ArgumentParser) -> None:
    """What every harness here takes: the model to serve, where reports go, keeping the logs."""
    p.add_argument("--tracking-uri", help="use this MLflow server instead of starting one")
    p.add_argument("--model-uri", help="with --tracking-uri: the registered model to serve")
    p.add_argument("--reports-dir", type=Path, default=REPO / "reports")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs) after the run")


def add_round_args(p: argparse.ArgumentParser, concurrency_help: str) -> None:
    """Rounds of measured cells (`run_rounds`); `--quick`: one round of 3 s cells."""
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per cell")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per cell")
    p.add_argument("--concurrency", type=int, default=16, help=concurrency_help)
    p.add_argument("--quick", action="store_true", help="1 round of 3 s cells (a smoke run)")
    p.add_argument("--no-pin", action="store_true", help="do not pin generator and servers to CPUs")


def parse_round_args(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 3.0, 1.0
    return args


@contextlib.contextmanager
def harness(prefix: str, keep: bool) -> Iterator[tuple[Path, list[Server]]]:
    """A work folder and the list of servers started in it: all stopped at the end, the folder
    (logs) removed unless `keep`."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    print(f"work folder {work}", flush=True)
    servers: list[Server] = []
    try:
        yield work, servers
    finally:
        stop_all(servers)
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def write_report(reports_dir: Path, name: str, report: dict, text: str) -> None:
    """`<name>.json` (every figure) and `<name>.md` (the report, also printed)."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / f"{name}.json").write_text(json.dumps(report, indent=2))
    (reports_dir / f"{name}.md").write_text(text)
    print(text)
    print(f"wrote {reports_dir / f'{name}.md'} and {name}.json", flush=True)


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_serving")
    add_round_args(p, "connections at the throughput level")
    p.add_argument("--rows", type=int, default=1, help="rows per request")
    p.add_argument("--only", nargs="*", help="run only these targets (debugging)")
    add_harness_args(p)
    args = parse_round_args(p, argv)
    gen_cpus, server_cpus, pinning = cpu_split(args.no_pin)

    ensure_mlserver()
    with harness("bench-serving-", args.keep) as (work, servers):
        tracking_uri, model_uri = model_under_test(work, servers, args.tracking_uri, args.model_uri, server_cpus)
        model_dir = download_model(tracking_uri, model_uri, work / "model")
        print(f"serving {model_uri}", flush=True)
        primary = predictor_server("primary", model_uri, tracking_uri, work, server_cpus).start()
        shadow = predictor_server("shadow", model_uri, tracking_uri, work, server_cpus).start()
        floor_port = free_port()
        floor = Server("floor", [sys.executable, "-m", "loadtest.floor_app", "--port", str(floor_port)],
                       floor_port, "/", work / "floor.log", cpus=server_cpus).start()
        servers += [primary, shadow, floor]
        for s in (primary, shadow, floor):
            s.wait_ready()
        mlserver, mlserver_info = start_mlserver(work, model_dir, server_cpus)
        servers.append(mlserver)

        from airflow_project.serving import manifests
        from airflow_project.serving.constants import GRAPH_NAME, PRIMARY_SERVICE, SHADOW_SERVICE

        def router(mode: str) -> Server:
            config = {
                "graph": manifests.inference_graph(GRAPH_NAME, PRIMARY_SERVICE, SHADOW_SERVICE),
                "services": {PRIMARY_SERVICE: primary.url, SHADOW_SERVICE: shadow.url},
                "mode": mode,
            }
            if mode == "mirror":
                config["mirror"] = {"primary": PRIMARY_SERVICE, "shadow": SHADOW_SERVICE,
                                    "percentage": 100}
            return router_server(f"router-{mode}", config, work, server_cpus).start()

        seq, mirror = router("graph"), router("mirror")
        servers += [seq, mirror]
        seq.wait_ready(60)
        mirror.wait_ready(60)

        batches = payloads.pool(size=256, rows_per_request=args.rows)
        v1_file, v2_file = work / "bodies-v1.json", work / "bodies-v2.json"
        v1_file.write_text(json.dumps([payloads.v1_body(b) for b in batches]))
        v2_file.write_text(json.dumps([payloads.v2_body(b) for b in batches]))
        v1_path, v2_path = f"/v1/models/{MODEL_NAME}:predict", f"/v2/models/{MODEL_NAME}/infer"
        endpoints = {
            "floor": (floor.url + v2_path, v2_file, "v2"),
            "predictor-v2": (primary.url + v2_path, v2_file, "v2"),
            "mlserver-v2": (mlserver.url + v2_path, v2_file, "v2"),
            "predictor-v1": (primary.url + v1_path, v1_file, "v1"),
            "graph-sequence": (seq.url + "/", v1_file, "v1"),
            "graph-mirror": (mirror.url + "/", v1_file, "v1"),
        }
        if args.only:
            endpoints = {k: v for k, v in endpoints.items() if k in args.only}
        levels = {"throughput": args.concurrency, "latency": 1}
        cells = [Cell(t, level, url, bodies, expect, c)
                 for level, c in levels.items() for t, (url, bodies, expect) in endpoints.items()]
        env_info = environment(pinning)
        raw = run_rounds(cells, args, gen_cpus)
        summary = {level: {t: summarize(rs) for t, rs in by_t.items()} for level, by_t in raw.items()}
        report = {
            "model": {"uri": model_uri, "tracking_uri": tracking_uri},
            "mlserver": mlserver_info,
            "config": {"rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
                       "throughput_concurrency": args.concurrency, "rows": args.rows, "pool": len(batches),
                       "generator": "loadtest.loadgen (asyncio+uvloop+httptools, closed loop, keep-alive)"},
            "environment": env_info,
            "summary": summary,
            "ratios": ratios(raw),
            "targets": TARGETS,
            "raw": raw,
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        }
        write_report(args.reports_dir, "bench-serving", report, markdown(report))
        return 0


if __name__ == "__main__":
    sys.exit(main())
