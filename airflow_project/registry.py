"""The MLflow model registry: register a trained model with its model card, apply the
promotion rule, and find a registered version by number or alias.

Training (the `train_model` DAG, `mlops train`), deploying (`deploy_steps`), serving (the
predictor) and `mlops up` all name versions the same way through this module. Every new
version becomes `challenger`; `champion` moves to it only when it beats the current
champion's MAE on the same hold-out rows and the champion's latest backtest (its MAE on an
export it had not seen, `backtest.py`) does not already beat the new version's hold-out
MAE by more than BACKTEST_MARGIN.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_project.wachttijden import model_card
from airflow_project.wachttijden.schema import MODEL_NAME

if TYPE_CHECKING:  # training pulls in pandas and numpy: imported where a model is trained
    import pandas as pd

    from airflow_project.wachttijden import training

log = logging.getLogger(__name__)

EXPERIMENT = MODEL_NAME
CHAMPION = "champion"
CHALLENGER = "challenger"
ARTIFACT_NAME = "model"
# What MLflow answers for a version or alias that does not exist (by server and version).
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})

# skops refuses to load types it does not trust. These are the only non-default
# types our estimators contain; anything else is an error at save time, so an
# unsafe model can never be registered (and pickle is never used).
SKOPS_TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)

# What loading the logged model and predicting with it need, and nothing else: without an
# explicit list MLflow infers one from wherever training runs (inside this folder the whole
# uv project, Airflow included; elsewhere whatever it captures, pytest and rich among them).
# Each is pinned at the version installed where training runs, which is uv.lock's in the dev
# environment and in the Airflow image alike (image/requirements-*.txt are exported from it).
MODEL_RUNTIME: tuple[str, ...] = ("mlflow", "scikit-learn", "skops", "pandas", "numpy")


def model_pip_requirements() -> list[str]:
    """The logged model's requirements.txt: MODEL_RUNTIME pinned (`dist==version`)."""
    from importlib.metadata import version

    return [f"{dist}=={version(dist)}" for dist in MODEL_RUNTIME]


BACKTEST_METRIC = "backtest_mae"
"""Logged on a version's own training run, step = the export date as YYYYMMDD: one series
per model across exports, which the MLflow UI charts (backtest.py)."""
BACKTEST_MARGIN = 0.10
"""How far the champion's backtest may beat the new version's hold-out MAE before the new
version is kept out (relative). Measured by `make calibrate-drift` (loadtest/drift_calibration.py,
margin_spread): for two equally good models on NZa-sized exports (~1,500 hold-out rows) the
champion's backtest 'beats' the new hold-out MAE by chance with a spread of about 4%
(sd; 90th percentile ~5%, largest of 25 pairs ~8.5%): 10% is past all of that, so only a
champion that is really better on unseen data blocks a promotion."""


@dataclass(frozen=True)
class ChampionBacktest:
    """The champion's latest backtest: its MAE on the export of `step` (YYYYMMDD)."""

    mae: float
    step: int

    @property
    def day(self) -> str:
        return f"{self.step // 10000:04d}-{self.step // 100 % 100:02d}-{self.step % 100:02d}"


def export_step(day: Any) -> int:
    """The backtest series' step for an export date: YYYYMMDD (sorts like the dates, reads as one)."""
    return int(f"{day:%Y%m%d}")


def latest_backtest(client: Any, run_id: str) -> ChampionBacktest | None:
    """The newest export a version's run has a backtest for (largest step, then newest)."""
    history = client.get_metric_history(run_id, BACKTEST_METRIC)
    if not history:
        return None
    latest = max(history, key=lambda m: (m.step, m.timestamp))
    return ChampionBacktest(mae=float(latest.value), step=int(latest.step))


@dataclass(frozen=True)
class RegistrationResult:
    run_id: str
    model_uri: str
    version: str
    promoted: bool
    metrics: dict[str, float]
    decision: str

    def as_cli_json(self) -> str:
        """The one-line JSON contract of `mlops train`."""
        payload = asdict(self)
        payload.pop("decision")
        return json.dumps(payload, sort_keys=False)


def _import_skops() -> Any:
    # At import skops looks up every numpy/scipy ufunc in every loaded module. In an
    # Airflow task that touches Airflow's deprecated-alias modules, and each hit
    # would emit (and log) a DeprecatedImportWarning: thousands of lines, seconds.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import skops.io as sio
    return sio


def _check_trusted(pipeline: Any) -> None:
    sio = _import_skops()
    untrusted = set(sio.get_untrusted_types(data=sio.dumps(pipeline))) - set(SKOPS_TRUSTED_TYPES)
    if untrusted:
        raise TypeError(
            f"model contains types not in SKOPS_TRUSTED_TYPES: {sorted(untrusted)}; "
            "review them and add them to airflow_project.registry.SKOPS_TRUSTED_TYPES"
        )


class _ToRoot(logging.Handler):
    """Hands MLflow's records to the root logger's handlers (the task log in Airflow)."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger().handle(record)


class _LinesAsRecords(io.TextIOBase):
    """A text stream whose lines become log records: MLflow's console messages (`eprint`:
    "Successfully registered model ...") written to `sys.stderr` while it is redirected here."""

    def __init__(self, logger: logging.Logger, fallback: Any) -> None:
        self._logger, self._fallback = logger, fallback
        self._pending = ""
        self._local = threading.local()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if getattr(self._local, "busy", False):  # a handler that writes to sys.stderr: no loop
            return self._fallback.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        self._emit(lines)
        return len(text)

    def _emit(self, lines: list[str]) -> None:
        self._local.busy = True
        try:
            for line in (line.rstrip() for line in lines):
                if line:
                    self._logger.log(logging.WARNING if "Warning" in line else logging.INFO, "%s", line)
        finally:
            self._local.busy = False

    def close_lines(self) -> None:
        rest, self._pending = self._pending, ""
        self._emit([rest])


@contextlib.contextmanager
def mlflow_logs_at_their_level() -> Iterator[None]:
    """MLflow's messages as log records at their own level, not as raw stderr.

    MLflow gives its logger a handler on stderr, and prints some messages there itself;
    an Airflow task logs everything on stderr as ERROR (`task.stderr`), so a successful
    training showed ten red lines. Inside this block MLflow's records go to the root
    logger (the task log, keeping MLflow's own filters) and stderr lines become records of
    `mlflow.console` (INFO; WARNING when they name a warning). Restored afterwards.
    """
    import mlflow  # noqa: F401 - configures the "mlflow" logger on import: take it over after that

    logger = logging.getLogger("mlflow")
    saved = logger.handlers[:]
    forward = _ToRoot()
    for handler in saved:
        for f in handler.filters:
            forward.addFilter(f)
    logger.handlers = [forward]
    stream = _LinesAsRecords(logging.getLogger("mlflow.console"), sys.stderr)
    try:
        with contextlib.redirect_stderr(stream):
            yield
    finally:
        stream.close_lines()
        logger.handlers = saved


class ModelVersionNotFound(LookupError):
    """The requested version or alias does not exist in the registry."""


def model_uri(version: str | int, name: str = MODEL_NAME) -> str:
    """`models:/<name>/<version>`: a registered version, pinned by number."""
    return f"models:/{name}/{version}"


def find_version(client: Any, ref: str | int, name: str = MODEL_NAME) -> Any | None:
    """A version number (`3`) or an alias (`champion`) -> its MLflow ModelVersion; None when
    the registry has no such version or alias."""
    from mlflow.exceptions import MlflowException

    ref = str(ref).strip()
    try:
        if ref.isdigit():
            return client.get_model_version(name, ref)
        return client.get_model_version_by_alias(name, ref)
    except MlflowException as exc:
        if exc.error_code in NOT_FOUND_CODES:
            return None
        raise


def require_version(client: Any, ref: str | int, name: str = MODEL_NAME) -> Any:
    """`find_version`, or ModelVersionNotFound naming what the registry does have."""
    mv = find_version(client, ref, name)
    if mv is None:
        ref = str(ref).strip()
        what = f"version {ref}" if ref.isdigit() else f"alias {ref!r}"
        raise ModelVersionNotFound(
            f"model {name!r} has no {what} in the MLflow registry at {client.tracking_uri}; "
            f"{describe_registry(client, name)}"
        )
    return mv


def describe_registry(client: Any, name: str = MODEL_NAME) -> str:
    """`existing versions: 1, 2; aliases: champion -> 2`, for error messages."""
    try:
        model = client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - only for the message
        return f"registered model {name!r} does not exist (run train_model first)"
    try:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    except Exception:  # noqa: BLE001
        versions = []
    aliases = ", ".join(f"{a} -> {v}" for a, v in sorted((model.aliases or {}).items())) or "none"
    shown = ", ".join(map(str, versions)) or "none"
    return f"existing versions: {shown}; aliases: {aliases}"


def score_version(version: str | int, x: pd.DataFrame, y: pd.Series) -> float:
    """A registered version's MAE on these rows."""
    import mlflow.sklearn

    from airflow_project.wachttijden.training import evaluate

    model = mlflow.sklearn.load_model(model_uri(version))
    return evaluate(y, model.predict(x), float(y.mean()))["mae"]


PROMOTION_RULE = ("rule: promote when the hold-out mae is below the champion's on the same rows and the "
                  "champion's latest backtest mae is not below hold-out mae x (1 - margin)")


def decide_promotion(new_mae: float, champion_mae: float | None, champion: str | None,
                     backtest: ChampionBacktest | None = None,
                     margin: float = BACKTEST_MARGIN) -> tuple[bool, str]:
    """Pure promotion rule: no champion yet; or a strictly better hold-out MAE than the
    champion's on the same rows, unless the champion's latest backtest (on an export it had
    not seen) beats the new hold-out MAE by more than `margin` (relative)."""
    if champion_mae is None:
        return True, "promoted: no champion yet"
    rule = f" [{PROMOTION_RULE}; margin {margin:.0%}]"
    holdout = f"hold-out mae {new_mae:.4f} {'<' if new_mae < champion_mae else '>='} champion v{champion}'s " \
              f"{champion_mae:.4f} on the same rows"
    backtested = (f"v{champion} has no backtest yet" if backtest is None else
                  f"v{champion}'s backtest mae {backtest.mae:.4f} on the unseen export of {backtest.day}")
    if new_mae >= champion_mae:
        return False, f"kept champion v{champion}: {holdout}; {backtested}{rule}"
    if backtest is None:
        return True, f"promoted: {holdout}; {backtested}{rule}"
    bound = new_mae * (1.0 - margin)
    if backtest.mae < bound:
        return False, (f"kept champion v{champion}: {holdout}, but {backtested} beats it by more than "
                       f"{margin:.0%} ({backtest.mae:.4f} < {bound:.4f}){rule}")
    return True, (f"promoted: {holdout}, and {backtested} does not beat it by more than {margin:.0%} "
                  f"({backtest.mae:.4f} >= {bound:.4f}){rule}")


SCHEMA_SAMPLE_ROWS = 1_000


def training_dataset(data: pd.DataFrame, uri: str) -> Any:
    """The MLflow dataset of training data at `uri` (name, digest, source, schema).

    Its schema is inferred from the first SCHEMA_SAMPLE_ROWS rows: MLflow infers a pandas
    dataset's schema cell by cell on text columns, which took 6 - 40 s of a 1M-row training
    (measured with cProfile: `mlflow.types.utils._infer_datatype`, 3.9M calls). Training
    data is validated before it gets here (four text columns, a float target), so a sample
    has the same schema. Digest and profile still cover every row.
    """
    from functools import cached_property

    import mlflow.data

    from airflow_project.wachttijden.schema import TARGET

    dataset = mlflow.data.from_pandas(data, source=uri, name=MODEL_NAME, targets=TARGET)
    if len(data) > SCHEMA_SAMPLE_ROWS and isinstance(type(dataset).__dict__.get("schema"), cached_property):
        sample = mlflow.data.from_pandas(data.head(SCHEMA_SAMPLE_ROWS), source=uri, name=MODEL_NAME, targets=TARGET)
        dataset.__dict__["schema"] = sample.schema  # what the cached property would have computed, sooner
    return dataset


def card_facts(result: training.TrainingResult, data: pd.DataFrame, *, version: str, run_id: str,
               source: str, metrics: dict[str, float], decision: str, data_report: dict[str, Any] | None,
               data_run: str | None, backtests: list[dict[str, Any]] | None) -> model_card.CardFacts:
    from airflow_project.datalake import dataset_day
    from airflow_project.wachttijden.export_checks import category_counts

    day = dataset_day(source)
    return model_card.CardFacts(
        version=version, run_id=run_id, estimator=str(result.params.get("estimator", "")),
        training_data=source, export_day=None if day is None else f"{day:%Y-%m-%d}", rows=len(data),
        n_train=len(result.x_train), n_test=len(result.x_test), category_counts=category_counts(data),
        metrics=metrics, decision=decision, data_report=data_report, data_run=data_run,
        backtests_before=list(backtests or []),
    )


@mlflow_logs_at_their_level()
def train_and_register(
    data: pd.DataFrame,
    config: training.TrainingConfig,
    *,
    tracking_uri: str | None = None,
    source: str = "",
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    artifact_location: str | None = None,
    dataset_uri: str | None = None,
    data_report: dict[str, Any] | None = None,
    data_run: str | None = None,
    backtests: list[dict[str, Any]] | None = None,
) -> RegistrationResult:
    """Train on `data`, log everything to MLflow, register and maybe promote, and give the
    version its model card.

    artifact_location is used only when the experiment does not exist yet; with
    a tracking server, leave it None so artifacts are proxied by the server.
    dataset_uri: where the training data is (logged as the run's training dataset, with its
    digest, so that the data checks find the champion's baseline and know it is unchanged).
    data_report, data_run: the data-check report of the export and its run (for the card);
    backtests: the scores of the backtest before this training (for the card).
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    from airflow_project.wachttijden import training

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    if artifact_location and client.get_experiment_by_name(EXPERIMENT) is None:
        client.create_experiment(EXPERIMENT, artifact_location=artifact_location)
    mlflow.set_experiment(EXPERIMENT)

    result = training.train(data, config)
    _check_trusted(result.pipeline)  # the first skops import, silenced (see _import_skops)

    with mlflow.start_run(run_name=run_name) as run:
        mlflow.set_tags({"source": source, "model_name": MODEL_NAME, **(tags or {})})
        mlflow.log_params({**result.params, "input": source, "rows": len(data), "promotion_margin": BACKTEST_MARGIN})
        mlflow.log_metrics(result.metrics)
        if dataset_uri:
            mlflow.log_input(training_dataset(data, dataset_uri), context="training")
        with tempfile.TemporaryDirectory() as tmp:
            plot = Path(tmp) / "predicted_vs_actual.png"
            plot.write_bytes(training.prediction_plot(result.y_test, result.predictions))
            mlflow.log_artifact(str(plot), artifact_path="plots")

        example = result.x_test.head(3)
        info = mlflow.sklearn.log_model(
            result.pipeline,
            name=ARTIFACT_NAME,
            serialization_format="skops",
            skops_trusted_types=list(SKOPS_TRUSTED_TYPES),
            signature=infer_signature(example, result.pipeline.predict(example)),
            input_example=example,
            registered_model_name=MODEL_NAME,
            pip_requirements=model_pip_requirements(),
        )
        version = str(info.registered_model_version)
        client.set_registered_model_alias(MODEL_NAME, CHALLENGER, version)

        current = find_version(client, CHAMPION)
        champion_mae = champion_backtest = None
        if current is not None and str(current.version) != version:
            champion_mae = score_version(current.version, result.x_test, result.y_test)
            mlflow.log_metric("champion_mae", champion_mae)
            champion_backtest = latest_backtest(client, current.run_id)
            if champion_backtest is not None:
                mlflow.log_metric("champion_backtest_mae", champion_backtest.mae)
        promoted, decision = decide_promotion(
            result.metrics["mae"], champion_mae, None if current is None else str(current.version),
            champion_backtest,
        )
        if promoted:
            client.set_registered_model_alias(MODEL_NAME, CHAMPION, version)
        mlflow.set_tags({"promotion_decision": decision, "promoted": str(promoted).lower()})
        client.set_model_version_tag(MODEL_NAME, version, "promotion_decision", decision)
        log.info("registered %s version %s; %s", MODEL_NAME, version, decision)

        facts = card_facts(result, data, version=version, run_id=run.info.run_id, source=source,
                           metrics={**result.metrics, **({"champion_mae": champion_mae} if champion_mae else {})},
                           decision=decision, data_report=data_report, data_run=data_run, backtests=backtests)
        client.update_model_version(MODEL_NAME, version, description=model_card.render(facts))
        mlflow.log_text(model_card.render(facts, full=True), "model_card.md")

    return RegistrationResult(
        run_id=run.info.run_id,
        model_uri=model_uri(version),
        version=version,
        promoted=promoted,
        metrics=result.metrics,
        decision=decision,
    )
