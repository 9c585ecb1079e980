"""The training dataset logged to MLflow: its schema comes from a sample (MLflow's own
inference is cell by cell), its digest from every row (`dataset.digest`), and the result is
what MLflow would have logged for the whole frame with that digest."""

from __future__ import annotations

import mlflow.data
import pytest

from airflow_project import registry
from airflow_project.wachttijden import dataset
from airflow_project.wachttijden.schema import TARGET
from airflow_project.wachttijden.synthetic import SyntheticConfig, generate, to_raw_bytes


@pytest.fixture(scope="module")
def prepared():
    frame, _ = dataset.prepare(to_raw_bytes(generate(SyntheticConfig(rows=3_000, seed=3))), "synthetic")
    return frame


def test_sampled_schema_logs_what_mlflow_would_infer_from_every_row(prepared, monkeypatch) -> None:
    monkeypatch.setattr(registry, "SCHEMA_SAMPLE_ROWS", 100)
    uri = "wasbs://preprocessed@acct.blob.core.windows.net/wachttijden/2024/03/09/wachttijden.csv"
    fast = registry.training_dataset(prepared, uri)
    full = mlflow.data.from_pandas(prepared, source=uri, name=registry.MODEL_NAME, targets=TARGET,
                                   digest=dataset.digest(prepared))
    assert fast.to_dict() == full.to_dict()  # schema, digest, profile (num_rows), source, name
    assert fast.profile["num_rows"] == len(prepared) > 100


def test_the_digest_covers_every_row(prepared) -> None:
    """MLflow's own digest looks at the first 10,000 rows: a change further down is missed.
    Two trainings are the same only when every row is (lineage.training_key)."""
    big = prepared.sample(n=12_000, replace=True, random_state=0).reset_index(drop=True)
    changed = big.copy()
    changed.loc[11_000, "WACHTTIJD"] += 1.0
    assert registry.legacy_dataset_digest(big) == registry.legacy_dataset_digest(changed)
    assert dataset.digest(big) != dataset.digest(changed)
    assert dataset.digest(big) == dataset.digest(big.copy())

