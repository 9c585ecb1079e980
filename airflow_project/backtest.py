"""Backtest: before training on a new export, score the current champion and challenger on
it. They were trained on earlier exports, so this is the fair, time-ordered test of a model
(the same hospitals and specialisms appear in every monthly export, so a model may well
have trained on rows like the new run's hold-out rows, never on the next export).

Each score is the metric `backtest_mae` of the version's own training run, with step = the
export date as YYYYMMDD (and the metric's timestamp at that date): one series per model
across exports, which the MLflow UI charts (experiment `wachttijden`, chart view, or the
run's metric page). The version's model card gets a row per export. The promotion rule
reads the champion's latest score (registry.decide_promotion).

A version is only scored on exports after the one it was trained on, by the export dates of
`lineage.py`: one trained on this export, on a later one, or on data without an export date
(`mlops train` from a file) is skipped, with the reason; a dataset without an export date
scores nothing (there is no order to test in). Scoring the same export again (a rerun)
records nothing new when the score is the one already recorded for that export.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any, TypedDict

from airflow_project import lineage, registry
from airflow_project.wachttijden import model_card
from airflow_project.wachttijden.schema import FEATURES, MODEL_NAME, TARGET

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


class BacktestScore(TypedDict):
    version: str
    aliases: list[str]
    run_id: str
    mae: float
    rows: int


class BacktestSkip(TypedDict):
    version: str
    aliases: list[str]
    reason: str


class BacktestResult(TypedDict):
    export: str
    day: str  # YYYY-MM-DD; "" for a dataset without an export date
    step: int  # YYYYMMDD; 0 without an export date
    scored: list[BacktestScore]
    skipped: list[BacktestSkip]


def not_unseen(trained_on: str, export: str, day: dt.date, trained_day: dt.date | None = None) -> str | None:
    """Why a model trained on `trained_on` (export date `trained_day`, else read from that
    path) may not be backtested on `export` of `day` (None: it may)."""
    if trained_on == export:
        return "trained on this export"
    trained_day = trained_day or lineage.export_date(trained_on)
    if trained_day is None:
        return f"its training data {trained_on or '(unknown)'} has no export date"
    if trained_day >= day:
        return f"trained on the export of {trained_day:%Y-%m-%d}, not an earlier one"
    return None


def _recorded(client: Any, run_id: str, step: int, mae: float) -> bool:
    """This score is already the run's backtest for this export (a rerun on the same data)."""
    return any(m.step == step and abs(m.value - mae) <= 1e-12
               for m in client.get_metric_history(run_id, registry.BACKTEST_METRIC))


def _models_to_score(client: Any) -> dict[str, tuple[Any, list[str]]]:
    """{version: (ModelVersion, aliases)} for champion and challenger (one entry when the same)."""
    out: dict[str, tuple[Any, list[str]]] = {}
    for alias in (registry.CHAMPION, registry.CHALLENGER):
        mv = registry.find_version(client, alias)
        if mv is not None:
            out.setdefault(str(mv.version), (mv, []))[1].append(alias)
    return out


def backtest_registered(frame: pd.DataFrame, *, export: str) -> BacktestResult:
    """Score champion and challenger on a prepared export they have not seen; log each MAE
    to the version's run (`backtest_mae`, step YYYYMMDD) and to its model card."""
    from mlflow import MlflowClient

    client = MlflowClient()
    day = lineage.export_date(export)
    models = _models_to_score(client)
    if day is None:
        reason = f"{export} has no export date: nothing to test a version on after its own"
        log.info("backtest: %s", reason)
        return BacktestResult(export=export, day="", step=0, scored=[], skipped=[
            BacktestSkip(version=version, aliases=aliases, reason=reason) for version, (_, aliases) in models.items()])
    step = registry.export_step(day)
    timestamp_ms = int(dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC).timestamp() * 1000)
    x, y = frame.loc[:, list(FEATURES)], frame[TARGET].astype("float64")
    result = BacktestResult(export=export, day=f"{day:%Y-%m-%d}", step=step, scored=[], skipped=[])
    for version, (mv, aliases) in models.items():
        trained_on = client.get_run(mv.run_id).data.params.get(lineage.INPUT_PARAM, "")
        reason = not_unseen(trained_on, export, day, lineage.version_export_date(client, mv))
        if reason:
            log.info("backtest: not scoring v%s (%s) on %s: %s", version, ", ".join(aliases), export, reason)
            result["skipped"].append(BacktestSkip(version=version, aliases=aliases, reason=reason))
            continue
        mae = registry.score_version(version, x, y)
        if _recorded(client, mv.run_id, step, mae):
            log.info("backtest: v%s (%s) mae %.4f on %s, as already recorded for this export", version,
                     ", ".join(aliases), mae, export)
        else:
            client.log_metric(mv.run_id, registry.BACKTEST_METRIC, mae, timestamp=timestamp_ms, step=step)
            card = model_card.with_backtest(mv.description or "", model_card.Backtest(
                export=export, day=result["day"], mae=mae, rows=len(frame)))
            client.update_model_version(MODEL_NAME, version, description=card)
            log.info("backtest: v%s (%s) mae %.4f on %s (%d rows, unseen)", version, ", ".join(aliases), mae,
                     export, len(frame))
        result["scored"].append(BacktestScore(version=version, aliases=aliases, run_id=mv.run_id, mae=mae,
                                              rows=len(frame)))
    return result
