"""What the data DAGs' tasks do, without Airflow: plain functions over a `DataLake`.

`prepare_dataset`'s two steps, which preprocessed dataset `train_model` uses, training on it,
and reading the newest one back for the shadow comparison. Task bodies call these with
plain values, so they are unit-testable without a running Airflow.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, TypedDict

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

    from airflow_project.wachttijden.training import TrainingConfig

log = logging.getLogger(__name__)

INTERMEDIATE_SUFFIX = ".parquet"
PREPARED_SUFFIX = ".csv"


@dataclass(frozen=True)
class StepResult:
    output: str
    rows: int


class TrainingResult(TypedDict):
    version: str
    promoted: bool
    decision: str
    run_id: str
    metrics: dict[str, float]


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


def fix_missing_values(lake: DataLake, intermediate: BlobRef) -> StepResult:
    """intermediate/<path>.parquet -> preprocessed/<path>.csv: rows a model can learn from."""
    from airflow_project.wachttijden import dataset

    source = str(intermediate)
    frame = dataset.read_intermediate(lake.read(intermediate), source)
    cleaned, report = dataset.fix_missing_values(frame, source)
    out = BlobRef(PREPROCESSED_CONTAINER, _with_suffix(intermediate.path, PREPARED_SUFFIX))
    lake.write(out, dataset.to_prepared_bytes(cleaned))
    return StepResult(str(out), report.rows_out)


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


def train(lake: DataLake, path: str, config: TrainingConfig, *, run_name: str,
          tags: dict[str, str]) -> TrainingResult:
    """Train on a preprocessed dataset of the lake, register the model, apply the promotion rule."""
    from airflow_project.registry import train_and_register

    ref = BlobRef.parse(path)
    result = train_and_register(read_prepared(lake, ref), config, source=str(ref), run_name=run_name, tags=tags)
    return TrainingResult(version=result.version, promoted=result.promoted, decision=result.decision,
                          run_id=result.run_id, metrics=result.metrics)
