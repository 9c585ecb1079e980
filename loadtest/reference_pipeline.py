"""The script a user would write instead of the platform: plain pandas + scikit-learn.

    python loadtest/reference_pipeline.py RAW.csv

Reads a raw NZa export, applies the platform's cleaning rules, fits the platform's default
model (one-hot encoder + decision tree, same hyper-parameters, same seeded 80/20 split) and
prints one JSON line: rows read and kept, hold-out MAE, seconds. No MLflow, no data lake,
no project import: it stands for what the platform is measured against (`make
bench-pipeline`, "reference"). A unit test (tests/unit/test_bench_pipeline_report.py) keeps
its rows and its MAE equal to the platform's own on the same export, so the comparison stays
one of the same work.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.metrics import mean_absolute_error
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.tree import DecisionTreeRegressor

FEATURES = ["TYPE_WACHTTIJD", "SPECIALISME", "ROAZ_REGIO", "TYPE_ZORGINSTELLING"]


def main(path: str) -> dict[str, float]:
    started = time.perf_counter()
    raw = pd.read_csv(path, sep=";", encoding="iso-8859-1", dtype=str, keep_default_na=False,
                      usecols=["WACHTTIJD", *FEATURES])
    target = pd.to_numeric(raw["WACHTTIJD"].str.strip().str.replace(",", ".", regex=False), errors="coerce")
    features = raw[FEATURES].apply(lambda column: column.str.strip())
    features["TYPE_ZORGINSTELLING"] = features["TYPE_ZORGINSTELLING"].replace("", "Kliniek")
    keep = np.isfinite(target) & (target >= 0) & (features != "").all(axis=1)
    x, y = features[keep].reset_index(drop=True), target[keep].reset_index(drop=True)

    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=42)
    model = Pipeline([
        ("features", ColumnTransformer([("onehot", OneHotEncoder(handle_unknown="ignore"), FEATURES)])),
        ("regressor", DecisionTreeRegressor(max_depth=12, min_samples_leaf=5, random_state=42)),
    ])
    model.fit(x_train, y_train)
    mae = float(mean_absolute_error(y_test, model.predict(x_test)))
    return {"rows_read": len(raw), "rows_kept": len(x), "mae": mae, "seconds": time.perf_counter() - started}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
