"""The work of the pipeline tasks, as plain functions over a DataLake.

DAG tasks are one-line calls into this module, so the logic is unit-testable
without Airflow and shared with the CLI's local-file path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import PurePosixPath

from airflow_project.datalake import (
    INTERMEDIATE_CONTAINER,
    PREPROCESSED_CONTAINER,
    BlobRef,
    DataLake,
)
from airflow_project.wachttijden import dataset

log = logging.getLogger(__name__)

INTERMEDIATE_SUFFIX = ".parquet"
PREPARED_SUFFIX = ".csv"


@dataclass(frozen=True)
class StepResult:
    output: str
    rows: int


def _with_suffix(path: str, suffix: str) -> str:
    return str(PurePosixPath(path).with_suffix(suffix))


def select_features(lake: DataLake, raw: BlobRef) -> StepResult:
    """raw/<path>.csv -> intermediate/<path>.parquet: target and four features, as found."""
    frame = dataset.select_features(dataset.read_raw(lake.read(raw), str(raw)))
    out = BlobRef(INTERMEDIATE_CONTAINER, _with_suffix(raw.path, INTERMEDIATE_SUFFIX))
    lake.write(out, dataset.to_intermediate_bytes(frame))
    return StepResult(str(out), len(frame))


def fix_missing_values(lake: DataLake, intermediate: BlobRef) -> StepResult:
    """intermediate/<path>.parquet -> preprocessed/<path>.csv: rows a model can learn from."""
    source = str(intermediate)
    frame = dataset.read_intermediate(lake.read(intermediate), source)
    cleaned, report = dataset.fix_missing_values(frame, source)
    out = BlobRef(PREPROCESSED_CONTAINER, _with_suffix(intermediate.path, PREPARED_SUFFIX))
    lake.write(out, dataset.to_prepared_bytes(cleaned))
    return StepResult(str(out), report.rows_out)


def latest_preprocessed(lake: DataLake) -> BlobRef:
    """The newest preprocessed dataset (paths sort by date)."""
    from airflow_project.datalake import DATASET

    names = [n for n in lake.list(PREPROCESSED_CONTAINER, f"{DATASET}/") if n.endswith(PREPARED_SUFFIX)]
    if not names:
        raise FileNotFoundError(
            f"no preprocessed dataset in container {PREPROCESSED_CONTAINER!r}: "
            "run prepare_dataset first or pass an explicit input path"
        )
    return BlobRef(PREPROCESSED_CONTAINER, names[-1])
