"""What a version means: the export its training data came from, the order of versions by
that export, and the key that says two trainings are the same.

**Export date.** A version's export date is the date in the data-lake path of its training
data (`datalake.dataset_day` of the run's `input`, `preprocessed/wachttijden/YYYY/MM/DD/...`),
recorded on the version as the tag `export_date`. A file outside the lake (`mlops train
--input prepared.csv`) has none. This one definition orders everything that compares
versions in time:

- the backtest scores a version only on exports after its own (`backtest.not_unseen`);
- the promotion rule: a version trained on an export older than the champion's is a
  **backfill** (tag `backfill`): registered, but it moves no alias; the challenger alias
  moves only to a version whose export is not older than the challenger's
  (`registry.train_and_register`);
- `deploy_traffic_mirroring`'s stand-in shadow and `mlops up`'s shadow, when both aliases
  name one version: the other version with the newest export (`newest_first`).

Versions are ordered by (export date, version number): a version without an export date
sorts before every dated one, and the version number breaks ties (a later training on the
same export is the newer one).

**Training key.** `training_key` hashes the training data's digest (every row,
`dataset.digest`), the training configuration and the scikit-learn release: a training
whose key matches a registered version registers nothing and names that version (the
`train_model` Param `force_retrain`, `mlops train --force`, train anyway).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from typing import Any

from airflow_project.datalake import dataset_day

EXPORT_DATE_TAG = "export_date"
BACKFILL_TAG = "backfill"
TRAINING_KEY_TAG = "training_key"
DATA_DIGEST_TAG = "data_digest"
INPUT_PARAM = "input"
"""The training run's param naming its training data (every version has it)."""


def export_date(source: str) -> dt.date | None:
    """The export date of training data at `source` (a data-lake path), None without one."""
    return dataset_day(source)


def version_export_date(client: Any, mv: Any) -> dt.date | None:
    """A registered version's export date: its tag, else (versions registered before the
    tag existed) the date in its run's `input` param."""
    tagged = (getattr(mv, "tags", None) or {}).get(EXPORT_DATE_TAG)
    if tagged:
        try:
            return dt.date.fromisoformat(tagged)
        except ValueError:
            pass
    return export_date(client.get_run(mv.run_id).data.params.get(INPUT_PARAM, ""))


def order_key(day: dt.date | None, version: str | int) -> tuple[dt.date, int]:
    """Sort key of a version in lineage order (oldest first)."""
    return (day or dt.date.min, int(version))


def newest_first(client: Any, versions: Iterable[Any]) -> list[Any]:
    """ModelVersions newest first by their export date, then by version number."""
    return sorted(versions, key=lambda mv: order_key(version_export_date(client, mv), mv.version), reverse=True)


def is_older(day: dt.date | None, than: dt.date | None) -> bool:
    """True when both dates are known and `day` is the earlier export (undated: never older)."""
    return day is not None and than is not None and day < than


def fmt(day: dt.date | None) -> str:
    return "no export date" if day is None else f"{day:%Y-%m-%d}"


def training_key(data_digest: str, config: Any) -> str:
    """Same data (every row), same configuration, same scikit-learn: the same model."""
    from importlib.metadata import version

    payload = {"data": data_digest, "estimator": config.estimator, "test_size": float(config.test_size),
               "random_seed": int(config.random_seed), "scikit-learn": version("scikit-learn")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]
