"""What the data DAGs' tasks do, without Airflow: plain functions over a `DataLake`.

`prepare_dataset`'s steps (select features, check the export, fix missing values), which
preprocessed dataset `train_model` uses, the backtest before training, training on it, and
reading the newest one back for the shadow comparison. Task bodies call these with plain
values, so they are unit-testable without a running Airflow.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, TypedDict

from airflow_project.datalake import (
    CONTAINERS,
    DATASET,
    INTERMEDIATE_CONTAINER,
    PREPROCESSED_CONTAINER,
    RAW_CONTAINER,
    BlobRef,
    DataLake,
    dataset_path,
)

if TYPE_CHECKING:
    import pandas as pd

    from airflow_project.backtest import BacktestResult
    from airflow_project.wachttijden.export_checks import GateThresholds
    from airflow_project.wachttijden.training import TrainingConfig

log = logging.getLogger(__name__)

INTERMEDIATE_SUFFIX = ".parquet"
PREPARED_SUFFIX = ".csv"


@dataclass(frozen=True)
class StepResult:
    output: str
    rows: int


SHA256_METADATA = "sha256"
"""Blob metadata of a preprocessed dataset: the SHA-256 of its bytes, so that a rerun knows
whether it would write anything new."""


class PreparedResult(TypedDict):
    """fix_missing_values' XCom and its asset event's extra."""

    path: str
    rows: int
    sha256: str
    unchanged: bool  # the dataset already held exactly these bytes: nothing was written


class ExportCheckResult(TypedDict):
    """The validate_export task's XCom: the gate and where the full report is."""

    gate: str  # passed | overridden (a failed gate fails the task)
    headline: str
    reasons: list[str]
    run_id: str
    experiment: str
    report: dict[str, Any]


class TrainingResult(TypedDict):
    version: str
    promoted: bool
    decision: str
    run_id: str
    metrics: dict[str, float]
    registered: bool  # False: an identical training is this version, nothing new was registered


def _with_suffix(path: str, suffix: str) -> str:
    return str(PurePosixPath(path).with_suffix(suffix))


def raw_input(raw_path: str | None, day: dt.date | dt.datetime) -> BlobRef:
    """The raw export to prepare: `raw_path` inside the raw container, else the day's."""
    if raw_path:
        return BlobRef(RAW_CONTAINER, raw_path.strip().lstrip("/"))
    return BlobRef(RAW_CONTAINER, dataset_path(day))


def select_features(lake: DataLake, raw: BlobRef) -> StepResult:
    """raw/<path>.csv -> intermediate/<path>.parquet: target and four features, as found."""
    from airflow_project.wachttijden import dataset

    frame = dataset.select_features(dataset.read_raw(lake.read(raw), str(raw)))
    out = BlobRef(INTERMEDIATE_CONTAINER, _with_suffix(raw.path, INTERMEDIATE_SUFFIX))
    lake.write(out, dataset.to_intermediate_bytes(frame))
    return StepResult(str(out), len(frame))


def preprocessed_output(intermediate: BlobRef) -> BlobRef:
    """Where fix_missing_values writes the prepared dataset of an intermediate file."""
    return BlobRef(PREPROCESSED_CONTAINER, _with_suffix(intermediate.path, PREPARED_SUFFIX))


GATE_OVERRIDE_PARAM = "gate_override"


def validate_export(lake: DataLake, intermediate: BlobRef, raw: BlobRef, thresholds: GateThresholds, *,
                    override: str | None = None, tags: dict[str, str] | None = None) -> ExportCheckResult:
    """Check the export against the champion's training data, log the report as a run of
    `wachttijden-data`, and stop (DataGateFailed) when the gate fails without an override."""
    from airflow_project import data_tracking
    from airflow_project.registry import mlflow_logs_at_their_level
    from airflow_project.wachttijden import dataset, export_checks

    frame = dataset.read_intermediate(lake.read(intermediate), str(intermediate))
    preprocessed = preprocessed_output(intermediate)
    with mlflow_logs_at_their_level():
        baseline = data_tracking.champion_baseline(lake)
        report = export_checks.check_export(
            frame, baseline.frame, source=str(raw), thresholds=thresholds, baseline_source=baseline.source,
            baseline_note=baseline.note, override=override,
        )
        run_id = data_tracking.log_data_run(
            report, baseline=baseline.frame, preprocessed=str(preprocessed),
            params={"export": str(raw), "baseline_version": baseline.version or ""}, tags=tags,
        )
    where = f"MLflow experiment {data_tracking.DATA_EXPERIMENT}, run {run_id}"
    if report.gate == "failed":
        raise export_checks.DataGateFailed(
            f"{raw}: data gate failed, nothing written to {preprocessed}: {'; '.join(report.reasons)}. "
            f"Report: {where}. To let this export through once, run again with the param "
            f"{GATE_OVERRIDE_PARAM} set to the reason."
        )
    if report.gate == "overridden":
        log.warning("%s: data gate failed but overridden (%s): %s", raw, report.override, "; ".join(report.reasons))
    log.info("%s: %s (%s)", raw, report.headline(), where)
    return ExportCheckResult(gate=report.gate, headline=report.headline(), reasons=report.reasons, run_id=run_id,
                             experiment=data_tracking.DATA_EXPERIMENT, report=report.to_dict())


def fix_missing_values(lake: DataLake, intermediate: BlobRef) -> PreparedResult:
    """intermediate/<path>.parquet -> preprocessed/<path>.csv: rows a model can learn from.
    A rerun on an unchanged export writes nothing and says `unchanged`."""
    import hashlib

    from airflow_project.wachttijden import dataset

    source = str(intermediate)
    frame = dataset.read_intermediate(lake.read(intermediate), source)
    cleaned, report = dataset.fix_missing_values(frame, source)
    out = preprocessed_output(intermediate)
    data = dataset.to_prepared_bytes(cleaned)
    sha256 = hashlib.sha256(data).hexdigest()
    unchanged = (lake.metadata(out) or {}).get(SHA256_METADATA) == sha256
    if unchanged:
        log.info("%s unchanged: it already holds these %d rows (sha256 %s); nothing written", out,
                 report.rows_out, sha256[:16])
    else:
        lake.write(out, data, metadata={SHA256_METADATA: sha256})
    return PreparedResult(path=str(out), rows=report.rows_out, sha256=sha256, unchanged=unchanged)


def latest_preprocessed(lake: DataLake) -> BlobRef:
    """The newest preprocessed dataset (paths sort by date)."""
    names = [n for n in lake.list(PREPROCESSED_CONTAINER, f"{DATASET}/") if n.endswith(PREPARED_SUFFIX)]
    if not names:
        raise FileNotFoundError(
            f"no preprocessed dataset in container {PREPROCESSED_CONTAINER!r}: "
            "run prepare_dataset first or pass an explicit input path"
        )
    return BlobRef(PREPROCESSED_CONTAINER, names[-1])


def training_input(lake: DataLake, input_path: str | None, event_path: str | None) -> str:
    """Which preprocessed dataset to train on: the explicit path (container optional), else
    the asset event's, else the newest in the lake."""
    explicit = (input_path or "").strip().lstrip("/")
    if explicit:
        if explicit.split("/", 1)[0] not in CONTAINERS:
            explicit = f"{PREPROCESSED_CONTAINER}/{explicit}"
        return str(BlobRef.parse(explicit))
    if event_path:
        log.info("training on %s from asset event", event_path)
        return str(BlobRef.parse(event_path))
    ref = latest_preprocessed(lake)
    log.info("no input given and no asset event: training on the newest dataset %s", ref)
    return str(ref)


def read_prepared(lake: DataLake, ref: BlobRef) -> pd.DataFrame:
    from airflow_project.wachttijden.dataset import read_prepared

    return read_prepared(lake.read(ref), str(ref))


def newest_prepared(lake: DataLake) -> tuple[pd.DataFrame, str]:
    """The newest preprocessed dataset and where it came from."""
    ref = latest_preprocessed(lake)
    return read_prepared(lake, ref), str(ref)


def backtest(lake: DataLake, path: str) -> BacktestResult:
    """Score champion and challenger on the dataset about to be trained on (before training),
    by its export date (`lineage.export_date`: the date in its path)."""
    from airflow_project.backtest import backtest_registered
    from airflow_project.registry import mlflow_logs_at_their_level

    ref = BlobRef.parse(path)
    with mlflow_logs_at_their_level():
        return backtest_registered(read_prepared(lake, ref), export=str(ref))


def train(lake: DataLake, path: str, config: TrainingConfig, *, run_name: str,
          tags: dict[str, str], backtest: BacktestResult | None = None, force: bool = False) -> TrainingResult:
    """Train on a preprocessed dataset of the lake, register the model with its model card,
    apply the promotion rule; or name the version an identical training already registered."""
    from airflow_project.data_tracking import find_data_report
    from airflow_project.registry import train_and_register

    ref = BlobRef.parse(path)
    found = find_data_report(str(ref))
    result = train_and_register(
        read_prepared(lake, ref), config, source=str(ref), run_name=run_name, tags=tags,
        dataset_uri=lake.url(ref), data_report=found[0] if found else None, data_run=found[1] if found else None,
        backtests=list(backtest["scored"]) if backtest else None, force=force,
    )
    return TrainingResult(version=result.version, promoted=result.promoted, decision=result.decision,
                          run_id=result.run_id, metrics=result.metrics, registered=result.registered)
