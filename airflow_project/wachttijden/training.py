"""Model training and evaluation.

The pipeline is `ColumnTransformer(OneHotEncoder) -> regressor`, fitted on the
four categorical features. Evaluation uses a seeded hold-out split so that two
models trained on the same data are compared on exactly the same rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .schema import FEATURES, TARGET

DEFAULT_ESTIMATOR = "decision_tree"


def _decision_tree(random_state: int) -> Any:
    from sklearn.tree import DecisionTreeRegressor

    # Depth and leaf size keep the tree small enough to serve fast and stop it
    # memorising noise on the (small) feature space.
    return DecisionTreeRegressor(max_depth=12, min_samples_leaf=5, random_state=random_state)


def _random_forest(random_state: int) -> Any:
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(
        n_estimators=50, max_depth=12, min_samples_leaf=5, n_jobs=-1, random_state=random_state
    )


def _gradient_boosting(random_state: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=200, random_state=random_state)


def _linear(random_state: int) -> Any:
    from sklearn.linear_model import Ridge

    return Ridge(alpha=1.0)


# Estimators that cannot take the encoder's sparse output.
_NEEDS_DENSE = {"gradient_boosting"}

ESTIMATORS: dict[str, Callable[[int], Any]] = {
    "decision_tree": _decision_tree,
    "random_forest": _random_forest,
    "gradient_boosting": _gradient_boosting,
    "linear": _linear,
}


@dataclass(frozen=True)
class TrainingConfig:
    estimator: str = DEFAULT_ESTIMATOR
    test_size: float = 0.2
    random_seed: int = 42

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(
                f"unknown estimator {self.estimator!r}; choose one of {sorted(ESTIMATORS)}"
            )
        if not 0.0 < self.test_size < 1.0:
            raise ValueError(f"test_size must be between 0 and 1 (exclusive), got {self.test_size}")


@dataclass
class TrainingResult:
    pipeline: Any
    metrics: dict[str, float]
    x_train: pd.DataFrame
    x_test: pd.DataFrame
    y_test: pd.Series
    predictions: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


def build_pipeline(estimator: str = DEFAULT_ESTIMATOR, random_seed: int = 42) -> Any:
    """An unfitted sklearn Pipeline that takes a DataFrame with the FEATURES columns."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {sorted(ESTIMATORS)}")
    encoder = ColumnTransformer(
        [(
            "onehot",
            OneHotEncoder(handle_unknown="ignore", sparse_output=estimator not in _NEEDS_DENSE),
            list(FEATURES),
        )],
        remainder="drop",
    )
    return Pipeline([("features", encoder), ("regressor", ESTIMATORS[estimator](random_seed))])


def split(df: pd.DataFrame, config: TrainingConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """The seeded hold-out split; the same data and config give the same rows."""
    from sklearn.model_selection import train_test_split

    x = df.loc[:, list(FEATURES)]
    y = df[TARGET].astype("float64")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=config.test_size, random_state=config.random_seed
    )
    return x_train, x_test, y_train, y_test


def evaluate(y_true: pd.Series, y_pred: np.ndarray, y_train_mean: float) -> dict[str, float]:
    """r2, mae, rmse of the model and the mae of a mean predictor on the same rows."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    return {
        "r2": float(r2_score(y_true, y_pred)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
        "baseline_mae": float(mean_absolute_error(y_true, np.full(len(y_true), y_train_mean))),
    }


def train(df: pd.DataFrame, config: TrainingConfig | None = None) -> TrainingResult:
    """Fit the pipeline on the training split and evaluate it on the hold-out split."""
    config = config or TrainingConfig()
    if len(df) < 10:
        raise ValueError(f"need at least 10 rows to train and evaluate, got {len(df)}")
    x_train, x_test, y_train, y_test = split(df, config)
    pipeline = build_pipeline(config.estimator, config.random_seed)
    pipeline.fit(x_train, y_train)
    predictions = pipeline.predict(x_test)
    metrics = evaluate(y_test, predictions, float(y_train.mean()))
    params = {
        "estimator": config.estimator,
        "test_size": config.test_size,
        "random_seed": config.random_seed,
        "n_train": len(x_train),
        "n_test": len(x_test),
        **{f"regressor__{k}": v for k, v in pipeline.named_steps["regressor"].get_params().items()
           if isinstance(v, (int, float, str, bool)) or v is None},
    }
    return TrainingResult(pipeline, metrics, x_train, x_test, y_test, predictions, params)


def prediction_plot(y_true: pd.Series, y_pred: np.ndarray, title: str = "Predicted vs actual") -> bytes:
    """A PNG scatter of predicted against actual waiting time, with the identity line."""
    from .plots import png

    def draw(ax: Any) -> None:
        sample = min(len(y_true), 5000)  # enough points to see the shape, small PNG
        idx = np.random.default_rng(0).choice(len(y_true), size=sample, replace=False)
        actual = np.asarray(y_true)[idx]
        predicted = np.asarray(y_pred)[idx]
        ax.scatter(actual, predicted, s=6, alpha=0.4)
        lim = float(max(actual.max(initial=0), predicted.max(initial=0))) * 1.05 or 1.0
        ax.plot([0, lim], [0, lim], color="black", linewidth=1, label="perfect prediction")
        ax.set(xlim=(0, lim), ylim=(0, lim), xlabel="actual waiting time (weeks)",
               ylabel="predicted waiting time (weeks)", title=title)
        ax.legend(loc="upper left")

    return png(draw, (6, 6))
