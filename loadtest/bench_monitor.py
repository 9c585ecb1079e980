"""Monitoring benchmark: what capture costs a predictor, and what `mlops monitor` costs.

    python -m loadtest.bench_monitor [--rounds 3] [--quick] [--requests 1000000]

(a) Capture on vs off, in the same run: two predictors of the same registered version; the
local capture process (`monitoring.capture_process`, as the local controller starts it)
follows the second one's log and writes its predictions to Azurite, started here on a free
port. Each round measures both with the same load generator and payloads as
`make bench-serving` (`loadtest.loadgen`, closed loop, V1 bodies), interleaved; the capture
process runs on the servers' CPU, beside the predictor it follows (the worst place for it).
Targets: throughput with capture >= 0.9x without, p99 <= 1.1x.

(b) `mlops monitor` over captured traffic: `--requests` predictions (1,000,000; `--quick`:
100,000) of the registered version on rows of its training data, written in the capture
layout (batches of 500, as the capture process writes them), then `mlops monitor
--requests DIR --baseline ... --labels ...` as a user runs it, registry facts included
(the model loaded and scored on its training rows). Target: <= 30 s on 2 cores.

Writes `reports/bench-monitor.md` and `.json`. Not a test: targets are reported as met or
missed; the exit code is 0 unless the benchmark could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loadtest import payloads
from loadtest.bench_serving import (
    MODEL_NAME,
    REPO,
    Cell,
    Server,
    add_harness_args,
    add_round_args,
    cpu_split,
    environment,
    free_port,
    harness,
    model_under_test,
    parse_round_args,
    per_round_ratios,
    predictor_server,
    report_heading,
    run_rounds,
    summarize,
    write_report,
)

NAMESPACE = "bench"
CAPTURED = "predictor-capture"
PLAIN = "predictor"
BATCH = 500
TARGETS = {"capture_throughput_ratio": 0.9, "capture_p99_ratio": 1.1, "monitor_seconds": 30.0}


def start_azurite(work: Path) -> tuple[Any, str]:
    from airflow_project.local import stack
    from airflow_project.local.config import azurite_connection_string

    port = free_port()
    process = stack.ServiceProcess(stack.azurite_spec(work / "azurite", port), work / "azurite.log").start()
    process.wait_ready()
    return process, azurite_connection_string(port)


def capture_server(work: Path, predictor: Server, connection: str, cpus: set[int] | None) -> Server:
    """The capture process on a home whose one InferenceService record names `predictor`'s log."""
    home = work / "home"
    record = home / "serving" / NAMESPACE / f"InferenceService-{predictor.name}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"name": predictor.name, "log": str(predictor.log)}))
    from airflow_project.monitoring.capture_process import CONNECTION_ENV
    from loadtest.bench_serving import _env

    return Server("capture", [sys.executable, "-m", "airflow_project.monitoring.capture_process", "--home",
                              str(home), "--namespace", NAMESPACE], 0, "", work / "capture.log",
                  env=_env(**{CONNECTION_ENV: connection}), cpus=cpus).start()


def capture_status(work: Path) -> dict:
    from airflow_project.serving.targets.local import read_capture_status

    return read_capture_status(work / "home", NAMESPACE) or {}


def capture_ratios(raw: dict[str, dict[str, list[dict]]]) -> list[dict]:
    rows = []
    for name, metric, op, bound in (("throughput with capture / without", "rps", ">=", TARGETS["capture_throughput_ratio"]),
                                    ("p99 with capture / without", "p99", "<=", TARGETS["capture_p99_ratio"])):
        per_round = per_round_ratios(raw["throughput"][CAPTURED], raw["throughput"][PLAIN], metric, metric)
        value = statistics.median(per_round)
        rows.append({"name": name, "value": round(value, 3), "min": round(min(per_round), 3),
                     "max": round(max(per_round), 3), "per_round": [round(v, 3) for v in per_round],
                     "target": f"{op} {bound}", "met": value >= bound if op == ">=" else value <= bound})
    return rows


def write_captured(folder: Path, frame: Any, predictions: Any, version: str, n: int) -> int:
    """`n` predictions of rows of `frame` in the capture layout (files of BATCH); files written."""
    import numpy as np

    from airflow_project.monitoring import capture
    from airflow_project.serving.request_ids import new_request_id
    from airflow_project.wachttijden.schema import FEATURES

    rows = frame.loc[:, list(FEATURES)].astype(str).to_numpy()
    picks = np.random.default_rng(0).integers(0, len(rows), n)
    now, files = time.time(), 0
    for start in range(0, n, BATCH):
        records: list[dict] = []
        for i in picks[start:start + BATCH]:
            line = {"ts": now, "request_id": new_request_id(), "model_version": version, "latency_ms": 0.2,
                    "inputs": [dict(zip(FEATURES, rows[i]))], "outputs": [float(predictions[i])]}
            records += capture.records_from_prediction(line, namespace=NAMESPACE, service=PLAIN,
                                                       record_id=new_request_id())
        path = folder / capture.blob_name(records)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(capture.encode_batch(records))
        files += 1
    return files


def bench_monitor_cli(work: Path, tracking_uri: str, model_uri: str, n: int) -> dict:
    import mlflow.sklearn

    from airflow_project.wachttijden import dataset, synthetic

    train, _ = dataset.prepare(synthetic.to_raw_bytes(synthetic.generate(synthetic.SyntheticConfig(rows=20_000))), "b")
    later, _ = dataset.prepare(synthetic.to_raw_bytes(synthetic.generate(
        synthetic.SyntheticConfig(rows=20_000, seed=2))), "l")
    baseline, labels = work / "baseline.csv", work / "labels.csv"
    baseline.write_bytes(dataset.to_prepared_bytes(train))
    labels.write_bytes(dataset.to_prepared_bytes(later))
    model = mlflow.sklearn.load_model(model_uri)
    predictions = model.predict(later.loc[:, ["TYPE_WACHTTIJD", "SPECIALISME", "ROAZ_REGIO", "TYPE_ZORGINSTELLING"]])
    folder = work / "captured"
    started = time.perf_counter()
    files = write_captured(folder, later, predictions, model_uri.rsplit("/", 1)[-1], n)
    written_s = time.perf_counter() - started
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"wrote {n:,} captured predictions in {files:,} files ({size / 2**20:.0f} MiB) in {written_s:.1f}s", flush=True)
    argv = [str(Path(sys.executable).parent / "mlops"), "monitor", "--requests", str(folder), "--baseline",
            str(baseline), "--labels", str(labels), "--tracking-uri", tracking_uri]
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False, timeout=1800)
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"mlops monitor failed ({proc.returncode}): {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    version = next(iter(report["versions"].values()))
    return {"requests": n, "files": files, "bytes": size, "seconds": round(seconds, 2),
            "peak_rss_mib": round(peak / 2**20), "read": report["traffic"],
            "realised_mae": version["realised"]["mae"] if version["realised"] else None,
            "prediction_drift": (version["prediction_drift"] or {}).get("psi"),
            "met": seconds <= TARGETS["monitor_seconds"], "exit_code": proc.returncode}


def markdown(report: dict) -> str:
    s, m = report["summary"]["throughput"], report["monitor"]
    lines = [
        *report_heading("Monitoring benchmark", report, "loadtest.bench_monitor"),
        "## Capture on vs off (same run, same predictor version)",
        "",
        "| ratio | median | range over rounds | target | met |",
        "| --- | ---: | --- | --- | --- |",
        *(f"| {r['name']} | {r['value']} | {r['min']} - {r['max']} | {r['target']} | {'yes' if r['met'] else 'NO'} |"
          for r in report["ratios"]),
        "",
        "| predictor | req/s | p50 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(f"| {name} | {s[name]['throughput_rps']} | {s[name]['p50_ms']} | {s[name]['p99_ms']} | {s[name]['errors']} |"
          for name in (PLAIN, CAPTURED)),
        "",
        (f"Capture process at the end: {report['capture'].get('written', 0):,} predictions written to "
         f"`serving-logs`, {report['capture'].get('dropped', 0):,} dropped, {report['capture'].get('buffered', 0):,} "
         f"buffered, {report['capture'].get('upload_errors', 0)} upload errors."),
        "",
        "## `mlops monitor` over captured traffic",
        "",
        "| requests | files | size | wall time | peak RSS | target | met |",
        "| ---: | ---: | ---: | ---: | ---: | --- | --- |",
        (f"| {m['requests']:,} | {m['files']:,} | {m['bytes'] / 2**20:.0f} MiB | {m['seconds']} s | "
         f"{m['peak_rss_mib']} MiB | <= {TARGETS['monitor_seconds']:g} s | {'yes' if m['met'] else 'NO'} |"),
        "",
        "## Environment",
        "",
        (f"- {report['environment']['host_cpus']} CPUs ({report['environment']['cpu_model']}), "
         f"Python {report['environment']['python']}; pinning: {report['environment']['pinning']['description']}"),
        f"- {report['config']}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_monitor")
    add_round_args(p, "connections per predictor")
    p.add_argument("--requests", type=int, default=1_000_000, help="captured predictions `mlops monitor` reads")
    add_harness_args(p)
    args = parse_round_args(p, argv)
    if args.quick and args.requests == 1_000_000:
        args.requests = 100_000
    gen_cpus, server_cpus, pinning = cpu_split(args.no_pin)
    with harness("bench-monitor-", args.keep) as (work, servers):
        azurite, connection = start_azurite(work)
        try:
            tracking_uri, model_uri = model_under_test(work, servers, args.tracking_uri, args.model_uri)
            plain = predictor_server(PLAIN, model_uri, tracking_uri, work, server_cpus).start()
            captured = predictor_server(CAPTURED, model_uri, tracking_uri, work, server_cpus).start()
            servers += [plain, captured]
            for s in (plain, captured):
                s.wait_ready()
            servers.append(capture_server(work, captured, connection, server_cpus))
            bodies = work / "bodies-v1.json"
            bodies.write_text(json.dumps([payloads.v1_body(b) for b in payloads.pool(size=256)]))
            path = f"/v1/models/{MODEL_NAME}:predict"
            cells = [Cell(name, "throughput", s.url + path, bodies, "v1", args.concurrency)
                     for name, s in ((PLAIN, plain), (CAPTURED, captured))]
            env_info = environment(pinning)
            raw = run_rounds(cells, args, gen_cpus)
            time.sleep(3.0)  # the last batch's flush
            status = capture_status(work)
            monitor = bench_monitor_cli(work, tracking_uri, model_uri, args.requests)
        finally:
            azurite.stop()
        report = {
            "model": {"uri": model_uri, "tracking_uri": tracking_uri},
            "config": {"rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
                       "concurrency": args.concurrency, "monitor_requests": args.requests},
            "environment": env_info,
            "summary": {"throughput": {t: summarize(rs) for t, rs in raw["throughput"].items()}},
            "ratios": capture_ratios(raw),
            "capture": status,
            "monitor": monitor,
            "targets": TARGETS,
            "raw": raw,
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        }
        write_report(args.reports_dir, "bench-monitor", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
