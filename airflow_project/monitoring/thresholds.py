"""What makes the monitoring report fail (light: the DAG file reads the defaults at parse time)."""

from __future__ import annotations

from dataclasses import dataclass

from airflow_project.registry import BACKTEST_MARGIN
from airflow_project.wachttijden.schema import DEFAULT_MAX_DRIFT

DEFAULT_MAX_MAE_RATIO = 1.0 + BACKTEST_MARGIN
"""Realised MAE on served traffic over the version's hold-out MAE. A version scored on the
next export differs from its hold-out MAE by chance by up to ~8.5% (`make calibrate-drift`'s
margin spread: the promotion rule's BACKTEST_MARGIN, 10%, is past all of it), so a realised
error more than 10% above the hold-out one has slipped, not wobbled."""


@dataclass(frozen=True)
class MonitorThresholds:
    max_drift: float = DEFAULT_MAX_DRIFT
    """Input drift (PSI of any feature) and prediction drift (PSI of the served predictions):
    the data gate's threshold, on the same statistic."""
    max_mae_ratio: float = DEFAULT_MAX_MAE_RATIO

    def __post_init__(self) -> None:
        if not self.max_drift > 0.0:
            raise ValueError(f"max_drift must be above 0, got {self.max_drift}")
        if not self.max_mae_ratio > 0.0:
            raise ValueError(f"max_mae_ratio must be above 0, got {self.max_mae_ratio}")

    @classmethod
    def from_optional(cls, max_drift: float | None, max_mae_ratio: float | None) -> MonitorThresholds:
        """From optional values (an empty Param or flag): the defaults fill the gaps."""
        return cls(DEFAULT_MAX_DRIFT if max_drift is None else float(max_drift),
                   DEFAULT_MAX_MAE_RATIO if max_mae_ratio is None else float(max_mae_ratio))
