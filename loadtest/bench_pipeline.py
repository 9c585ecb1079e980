"""Pipeline benchmark: prepare + train through the CLI path and through the DAG path.

    python -m loadtest.bench_pipeline [--rows 100000 1000000]      (make bench-pipeline)

For each size, a generated raw export is (1) prepared and trained with `mlops data
prepare` + `mlops train`, and (2) uploaded to Azurite and run through `prepare_dataset`
and `train_model` with `dag.test()`. Both paths log to the same real MLflow server
(artifacts on Azurite). Every measured step runs in a fresh child process; wall time
and the child's peak RSS are recorded. Results go to reports/bench-pipeline.{md,json}.

This is a benchmark, not a test: it asserts nothing, it reports against the targets
(1M rows <= 60 s on 2 cores; DAG path <= 1.3x the CLI path).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "reports"
BIN = Path(sys.executable).parent
TARGET_1M_SECONDS = 60.0
TARGET_DAG_RATIO = 1.3


@dataclass
class Measurement:
    rows: int
    path: str
    seconds: float
    peak_rss_mib: float


def measure(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run argv in a child; wall seconds and the child's peak RSS (MiB).

    A fresh measuring process per command, so RUSAGE_CHILDREN holds only that command.
    """
    probe = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter()\n"
        "rc = subprocess.run(sys.argv[1:]).returncode\n"
        "s = time.perf_counter() - t\n"
        "m = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps({'rc': rc, 's': s, 'm': m}), file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe, *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            check=False)
    last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "{}"
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stderr[-3000:]}")
    stats = json.loads(last)
    return stats["s"], stats["m"]


DAG_RUNNER = """
import datetime as dt, sys
from airflow.dag_processing.dagbag import DagBag
day = dt.datetime.fromisoformat(sys.argv[1])
dags = DagBag().dags
if dags["prepare_dataset"].test(logical_date=day).state != "success":
    sys.exit("prepare_dataset failed")
conf = {"input_path": sys.argv[2]}
if dags["train_model"].test(logical_date=day, run_conf=conf).state != "success":
    sys.exit("train_model failed")
"""


def run(sizes: list[int]) -> list[Measurement]:
    from airflow_project.datalake import RAW_CONTAINER, BlobRef, DataLake, dataset_path
    from airflow_project.local import services
    from airflow_project.local.config import LocalConfig, Ports

    home = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    ports = Ports(azurite=services.free_port(), mlflow=services.free_port(),
                  airflow=services.free_port(), serving=services.free_port())
    config = LocalConfig(root=home, ports=ports)
    logs = home / "logs"
    azurite = services.ServiceProcess(services.azurite_spec(config.azurite_data, ports.azurite),
                                      logs / "azurite.log").start().wait_ready()
    lake = DataLake.from_connection_string(config.azurite_connection_string)
    lake.ensure_containers()
    mlflow = services.ServiceProcess(
        services.mlflow_spec(config.mlflow_data, ports.mlflow, ports.azurite), logs / "mlflow.log"
    ).start().wait_ready()
    env = {**os.environ, **config.airflow_env()}
    env.pop("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", None)  # dag.test runs in-process
    try:
        subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True,
                       capture_output=True)
        results: list[Measurement] = []
        for index, rows in enumerate(sizes):
            raw = home / f"raw-{rows}.csv"
            prepared = home / f"prepared-{rows}.csv"
            subprocess.run([str(BIN / "mlops"), "data", "generate", "--rows", str(rows),
                            "--seed", "1", "--output", str(raw)], check=True)
            print(f"[{rows} rows] CLI path ...", flush=True)
            s1, m1 = measure([str(BIN / "mlops"), "data", "prepare", "--input", str(raw),
                              "--output", str(prepared)], env)
            s2, m2 = measure([str(BIN / "mlops"), "train", "--input", str(prepared),
                              "--tracking-uri", config.mlflow_uri], env)
            results.append(Measurement(rows, "cli", s1 + s2, max(m1, m2)))

            print(f"[{rows} rows] DAG path ...", flush=True)
            day = dt.datetime(2030, 1, 1 + index, tzinfo=dt.UTC)
            lake.write(BlobRef(RAW_CONTAINER, dataset_path(day)), raw.read_bytes())
            seconds, peak = measure(
                [sys.executable, "-c", DAG_RUNNER, day.isoformat(),
                 f"preprocessed/{dataset_path(day)}"], env)
            results.append(Measurement(rows, "dag", seconds, peak))
            print(f"[{rows} rows] cli {s1 + s2:.1f}s, dag {seconds:.1f}s", flush=True)
        return results
    finally:
        mlflow.stop()
        azurite.stop()


def report(results: list[Measurement]) -> str:
    by = {(m.rows, m.path): m for m in results}
    lines = [
        "# Pipeline benchmark: prepare + train",
        "",
        f"- when: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}",
        f"- machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}",
        "- CLI path: `mlops data prepare` + `mlops train` on local files, MLflow server on Azurite",
        "- DAG path: raw blob on Azurite, `prepare_dataset` + `train_model` via `dag.test()`",
        "- wall time includes process start-up and MLflow logging/registration; peak RSS is the",
        "  largest single process",
        "",
        "| rows | path | wall (s) | peak RSS (MiB) | DAG / CLI |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for rows in sorted({m.rows for m in results}):
        cli, dag = by[(rows, "cli")], by[(rows, "dag")]
        for m in (cli, dag):
            ratio = f"{dag.seconds / cli.seconds:.2f}" if m is dag else ""
            lines.append(f"| {rows:,} | {m.path} | {m.seconds:.1f} | {m.peak_rss_mib:.0f} | {ratio} |")
    lines += ["", "## Targets", ""]
    for rows in sorted({m.rows for m in results}):
        cli, dag = by[(rows, "cli")], by[(rows, "dag")]
        ratio = dag.seconds / cli.seconds
        verdict = "met" if ratio <= TARGET_DAG_RATIO else "MISSED"
        lines.append(f"- {rows:,} rows: DAG path {ratio:.2f}x the CLI path "
                     f"(target <= {TARGET_DAG_RATIO}x): {verdict}")
        if rows == 1_000_000:
            worst = max(cli.seconds, dag.seconds)
            verdict = "met" if worst <= TARGET_1M_SECONDS else "MISSED"
            lines.append(f"- 1M rows: slowest path {worst:.1f} s (target <= {TARGET_1M_SECONDS:.0f} s): {verdict}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args(argv)
    results = run(args.rows)
    REPORTS.mkdir(exist_ok=True)
    text = report(results)
    (REPORTS / "bench-pipeline.md").write_text(text)
    (REPORTS / "bench-pipeline.json").write_text(
        json.dumps([asdict(m) for m in results], indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
