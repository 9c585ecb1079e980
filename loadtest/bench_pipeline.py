"""Pipeline benchmark: prepare + check + train through the CLI path and through the DAG path.

    python -m loadtest.bench_pipeline [--rows 100000 1000000]      (make bench-pipeline)

For each size, a generated raw export is (1) prepared, checked and trained with `mlops
data prepare` + `mlops data check` + `mlops train`, and (2) uploaded to Azurite and run
through `prepare_dataset` and `train_model` with `dag.test()`: once in a process where Airflow is already up (the
DAG path a user of a running platform waits for; this is the figure judged against the
ratio target) and once in a cold process, reported alongside. Both paths log to the
same real MLflow server (artifacts on Azurite). Every measured step runs in a fresh
child process; wall time and the child's peak RSS are recorded. Results go to
reports/bench-pipeline.{md,json}.

This is a benchmark, not a test: it asserts nothing, it reports against the targets
(1M rows <= 60 s on 2 cores, every path; DAG path <= 1.3x the CLI path).
"""

from __future__ import annotations

import argparse
import contextlib
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
CLI = "cli"
DAG = "dag"
DAG_COLD = "dag, cold process"


@dataclass
class Measurement:
    rows: int
    path: str
    seconds: float
    peak_rss_mib: float


def measure(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run argv in a child: {"s": wall seconds, "m": the child's peak RSS (MiB), ...}.

    A fresh measuring process per command, so RUSAGE_CHILDREN holds only that command.
    The child may report its own figures as one-line JSON objects on stderr.
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
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stderr[-3000:]}")
    stats: dict[str, float] = {}
    for line in result.stderr.splitlines():
        if line.startswith("{") and line.endswith("}"):
            with contextlib.suppress(ValueError):
                stats.update(json.loads(line))
    return stats


# The DAG path as a user meets it: Airflow is up (DAGs parsed and in the metadata
# DB, execution API serving), a DAG run is triggered. The runner first does what the
# long-running Airflow processes do once: import Airflow, parse the DagBag, and run
# a no-op DAG from a second bundle, which syncs the bundles to the DB and starts the
# in-process execution API without importing any project code. Then it times
# prepare_dataset + train_model. Without a warm-up folder ("-") nothing is warmed
# and the caller times the whole process: the cold figure.
WARM_UP_BUNDLE = "bench-warm-up"
WARM_UP_DAG = """
from airflow.sdk import dag, task


@dag(schedule=None)
def bench_warm_up():
    @task
    def noop() -> None:
        return None

    noop()


bench_warm_up()
"""
DAG_RUNNER = """
import datetime as dt, json, sys, time
from airflow.dag_processing.dagbag import DagBag

day = dt.datetime.fromisoformat(sys.argv[1])
dags = DagBag().dags
if sys.argv[3] != "-":
    warm_up = DagBag(dag_folder=sys.argv[3]).dags["bench_warm_up"]
    if warm_up.test(logical_date=day).state != "success":
        sys.exit("warm-up DAG failed")
start = time.perf_counter()
if dags["prepare_dataset"].test(logical_date=day).state != "success":
    sys.exit("prepare_dataset failed")
conf = {"input_path": sys.argv[2]}
if dags["train_model"].test(logical_date=day, run_conf=conf).state != "success":
    sys.exit("train_model failed")
print(json.dumps({"dag_runs_s": time.perf_counter() - start}), file=sys.stderr)
"""


def run(sizes: list[int]) -> list[Measurement]:
    from airflow_project.datalake import RAW_CONTAINER, BlobRef, DataLake, dataset_path
    from airflow_project.host.net import free_port
    from airflow_project.local import stack
    from airflow_project.local.config import LocalConfig, Ports

    home = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    ports = Ports(azurite=free_port(), mlflow=free_port(), airflow=free_port(), serving=free_port())
    config = LocalConfig(root=home, ports=ports)
    logs = home / "logs"
    azurite = stack.ServiceProcess(stack.azurite_spec(config.azurite_data, ports.azurite),
                                      logs / "azurite.log").start().wait_ready()
    lake = DataLake.from_connection_string(config.azurite_connection_string)
    lake.ensure_containers()
    mlflow = stack.ServiceProcess(
        stack.mlflow_spec(config.mlflow_data, ports.mlflow, ports.azurite), logs / "mlflow.log"
    ).start().wait_ready()
    env = {**os.environ, **config.airflow_env()}
    env.pop("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", None)  # dag.test runs in-process
    warm_up = home / WARM_UP_BUNDLE
    warm_up.mkdir()
    (warm_up / "bench_warm_up.py").write_text(WARM_UP_DAG)
    local_bundle = "airflow.dag_processing.bundles.local.LocalDagBundle"
    env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps([
        {"name": "dags-folder", "classpath": local_bundle, "kwargs": {}},
        {"name": WARM_UP_BUNDLE, "classpath": local_bundle, "kwargs": {"path": str(warm_up)}},
    ])
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
            prepare = measure([str(BIN / "mlops"), "data", "prepare", "--input", str(raw),
                               "--output", str(prepared)], env)
            # The data gate, as prepare_dataset's validate_export runs it: against the data
            # the champion was trained on (the same export's prepared file here).
            check = measure([str(BIN / "mlops"), "data", "check", "--input", str(raw),
                             "--baseline", str(prepared)], env)
            train = measure([str(BIN / "mlops"), "train", "--input", str(prepared),
                             "--tracking-uri", config.mlflow_uri], env)
            cli = prepare["s"] + check["s"] + train["s"]
            results.append(Measurement(rows, CLI, cli, max(prepare["m"], check["m"], train["m"])))

            print(f"[{rows} rows] DAG path ...", flush=True)
            figures: dict[str, float] = {}
            for offset, (path, folder) in enumerate(((DAG, str(warm_up)), (DAG_COLD, "-"))):
                day = dt.datetime(2030, 1 + offset, 1 + index, tzinfo=dt.UTC)
                lake.write(BlobRef(RAW_CONTAINER, dataset_path(day)), raw.read_bytes())
                dag = measure([sys.executable, "-c", DAG_RUNNER, day.isoformat(),
                               f"preprocessed/{dataset_path(day)}", folder], env)
                figures[path] = dag["dag_runs_s"] if path == DAG else dag["s"]
                results.append(Measurement(rows, path, figures[path], dag["m"]))
            print(f"[{rows} rows] cli {cli:.1f}s, dag {figures[DAG]:.1f}s "
                  f"(cold process {figures[DAG_COLD]:.1f}s)", flush=True)
        return results
    finally:
        mlflow.stop()
        azurite.stop()


def report(results: list[Measurement]) -> str:
    by = {(m.rows, m.path): m for m in results}
    sizes = sorted({m.rows for m in results})
    lines = [
        "# Pipeline benchmark: prepare + train",
        "",
        f"- when: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}",
        f"- machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}",
        "- cli: `mlops data prepare` + `mlops data check` (the data gate, against the prepared",
        "  file) + `mlops train` on local files (three processes, timed from start to exit),",
        "  MLflow server on Azurite; the DAG path also backtests champion and challenger",
        "  before training (no CLI counterpart) and logs the data report to MLflow",
        "- dag: raw blob on Azurite, `prepare_dataset` + `train_model` with `dag.test()` in a",
        "  process where Airflow is already up (DagBag parsed, execution API started by a",
        "  no-op warm-up run); task code, imports included, runs inside the timing",
        "- dag, cold process: the same runs in a fresh process without warm-up, timed from",
        "  start to exit: plus Airflow's own start-up and teardown, which a running",
        "  platform pays once, not per run",
        "- both log to the same MLflow server; peak RSS is the largest single process",
        "",
        "| rows | path | wall (s) | peak RSS (MiB) | / cli |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for rows in sizes:
        cli = by[(rows, CLI)]
        for path in (CLI, DAG, DAG_COLD):
            m = by[(rows, path)]
            ratio = "" if path == CLI else f"{m.seconds / cli.seconds:.2f}"
            lines.append(f"| {rows:,} | {path} | {m.seconds:.1f} | {m.peak_rss_mib:.0f} | {ratio} |")
    lines += ["", "## Targets", ""]
    for rows in sizes:
        ratio = by[(rows, DAG)].seconds / by[(rows, CLI)].seconds
        verdict = "met" if ratio <= TARGET_DAG_RATIO else "MISSED"
        lines.append(f"- {rows:,} rows: DAG path {ratio:.2f}x the CLI path "
                     f"(target <= {TARGET_DAG_RATIO}x): {verdict}")
        if rows == 1_000_000:
            worst = max(by[(rows, path)].seconds for path in (CLI, DAG, DAG_COLD))
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
