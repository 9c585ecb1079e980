"""`mlops monitor` through the real console script: one JSON line, exit 1 with the reasons on
stderr when a threshold is crossed, 2 for unreadable input. The served versions' registry
facts (prediction drift, hold-out MAE) need MLflow: tests/integration/monitoring has those."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from airflow_project.wachttijden import dataset, synthetic
from airflow_project.wachttijden.schema import FEATURES, TARGET

MLOPS = str(Path(sys.executable).parent / "mlops")
NO_REGISTRY = "http://127.0.0.1:9"  # nothing listens: the registry facts are left out, with the reason


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MLOPS, *args], capture_output=True, text=True, timeout=120, check=False)


def prediction_lines(frame: pd.DataFrame, version: str = "1", prediction: float = 10.0) -> str:
    now = time.time()
    return "".join(json.dumps({
        "event": "prediction", "ts": now + i, "request_id": f"r{i}", "model_name": "wachttijden",
        "model_version": version, "protocol": "v1", "inputs": [dict(zip(FEATURES, row))],
        "outputs": [prediction], "latency_ms": 0.2}) + "\n"
        for i, row in enumerate(frame.loc[:, list(FEATURES)].itertuples(index=False)))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("monitor")
    train, _ = dataset.prepare(synthetic.to_raw_bytes(synthetic.generate(synthetic.SyntheticConfig(rows=6000, seed=1))), "t")
    later, _ = dataset.prepare(synthetic.to_raw_bytes(synthetic.generate(synthetic.SyntheticConfig(rows=6000, seed=2))), "l")
    drifted = synthetic.generate(synthetic.SyntheticConfig(rows=3000, seed=3, renamed_specialisms=3))
    drifted, _ = dataset.prepare(synthetic.to_raw_bytes(drifted), "d")
    out = {"baseline": folder / "train.csv", "labels": folder / "later.csv",
           "clean": folder / "clean.log", "drifted": folder / "drifted.log"}
    out["baseline"].write_bytes(dataset.to_prepared_bytes(train))
    out["labels"].write_bytes(dataset.to_prepared_bytes(later))
    out["clean"].write_text(prediction_lines(later.sample(2000, random_state=0)))
    out["drifted"].write_text(prediction_lines(drifted.sample(2000, random_state=0)))
    return out


def test_clean_traffic_passes_with_one_json_line(files):
    result = run("monitor", "--requests", str(files["clean"]), "--baseline", str(files["baseline"]),
                 "--tracking-uri", NO_REGISTRY)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    report = json.loads(line)
    assert report["passed"] and report["traffic"]["requests"] == 2000
    version = report["versions"]["1"]
    assert version["input_drift"]["drift"] < 0.05
    assert version["realised"] is None and version["prediction_drift"] is None
    assert any("does not answer" in note for note in version["notes"])


def test_drifted_traffic_is_flagged_with_reasons_on_stderr(files):
    result = run("monitor", "--requests", str(files["drifted"]), "--baseline", str(files["baseline"]),
                 "--tracking-uri", NO_REGISTRY)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert not report["passed"]
    assert "mlops monitor: v1: input drift" in result.stderr and "SPECIALISME" in result.stderr
    assert report["versions"]["1"]["input_drift"]["new_categories"]["SPECIALISME"]


def test_labels_give_the_realised_mae(files):
    result = run("monitor", "--requests", str(files["clean"]), "--baseline", str(files["baseline"]),
                 "--labels", str(files["labels"]), "--tracking-uri", NO_REGISTRY)
    assert result.returncode == 0, result.stderr
    realised = json.loads(result.stdout)["versions"]["1"]["realised"]
    labels = pd.read_csv(files["labels"], sep=";", dtype=str)
    truth: dict[tuple[str, ...], list[float]] = {}
    for row in labels.itertuples(index=False):
        truth.setdefault(tuple(getattr(row, f) for f in FEATURES), []).append(float(getattr(row, TARGET)))
    served = [tuple(inst.values()) for inst in (json.loads(x)["inputs"][0] for x in files["clean"].read_text().splitlines())]
    errors = [sum(abs(10.0 - y) for y in truth[combo]) / len(truth[combo]) for combo in served]
    assert realised["scored"] == 2000 and realised["unlabelled"] == 0
    assert realised["mae"] == pytest.approx(sum(errors) / len(errors))


def test_unreadable_input_is_a_clear_error(files, tmp_path):
    missing = run("monitor", "--requests", str(tmp_path / "nope"), "--baseline", str(files["baseline"]))
    assert missing.returncode == 2 and "no such file or folder of captured traffic" in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"instances": []}')
    result = run("monitor", "--requests", str(bad), "--baseline", str(files["baseline"]))
    assert result.returncode == 2 and f"{bad}: JSON that is neither a capture batch" in result.stderr
    assert "Traceback" not in result.stderr
    no_baseline = run("monitor", "--requests", str(files["clean"]), "--baseline", str(tmp_path / "x.csv"))
    assert no_baseline.returncode == 2 and "input file does not exist" in no_baseline.stderr
