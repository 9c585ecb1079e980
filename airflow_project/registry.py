"""The MLflow model registry: register a trained model with its model card, apply the
promotion rule, and find a registered version by number or alias.

Training (the `train_model` DAG, `mlops train`), deploying (`deploy_steps`), serving (the
predictor) and `mlops up` all name versions the same way through this module. Versions are
ordered by the export date of their training data (`lineage.py`). A new version trained on
an export older than the champion's is a backfill: registered, tagged, no alias moved.
Otherwise it becomes `challenger` (unless the challenger was trained on a newer export),
and `champion` moves to it only when it beats the current champion's MAE on the same
hold-out rows and the champion's latest backtest (its MAE on an export it had not seen,
`backtest.py`) does not already beat the new version's hold-out MAE by more than
BACKTEST_MARGIN. A training on the same data with the same configuration as a registered
version registers nothing (`lineage.training_key`).
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

from airflow_project import lineage
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


MODEL_METRICS: tuple[str, ...] = ("r2", "mae", "rmse", "baseline_mae")
"""Every version's hold-out metrics (`training.evaluate`)."""
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
    registered: bool = True  # False: an identical training already is this version

    def as_cli_json(self) -> str:
        """The one-line JSON contract of `mlops train`."""
        payload = asdict(self)
        payload.pop("decision")
        return json.dumps(payload, sort_keys=False)


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
"""MLflow 3.17's experiment kind for classic model training (the UI's ExperimentKind enum in
mlflow/server/js: `genai_development`, `custom_model_development`, ...): an experiment with it
opens in the UI's model-training mode, whose runs table lists every run. Without it the UI
starts in its GenAI mode, where a run without a logged model is filed under "Evaluation
runs" (the data checks and shadow comparisons are such runs)."""


def use_experiment(name: str, artifact_location: str | None = None) -> Any:
    """mlflow.set_experiment(name), created (with `artifact_location`, when given) and marked
    as a model-training experiment when it is new or has no kind yet."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    if artifact_location and client.get_experiment_by_name(name) is None:
        client.create_experiment(name, artifact_location=artifact_location)
    experiment = mlflow.set_experiment(name)
    if EXPERIMENT_KIND_TAG not in (experiment.tags or {}):
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return experiment


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


def training_dataset(data: pd.DataFrame, uri: str, digest: str | None = None) -> Any:
    """The MLflow dataset of training data at `uri` (name, digest, source, schema).

    Its digest is `dataset.digest` (every row; pass it when it is known): MLflow's own
    looks at the first 10,000 rows only, and first types every cell of the frame in Python
    (`compute_pandas_digest`: `df.map(type)`, ~0.4 s per million rows). Its schema is
    inferred from the first SCHEMA_SAMPLE_ROWS rows: MLflow infers a pandas dataset's schema
    cell by cell on text columns, which took 6 - 40 s of a 1M-row training (measured with
    cProfile: `mlflow.types.utils._infer_datatype`, 3.9M calls). Training data is validated
    before it gets here (four text columns, a float target), so a sample has the same schema.
    """
    from functools import cached_property

    import mlflow.data

    from airflow_project.wachttijden.dataset import digest as data_digest
    from airflow_project.wachttijden.schema import TARGET

    dataset = mlflow.data.from_pandas(data, source=uri, name=MODEL_NAME, targets=TARGET,
                                      digest=digest or data_digest(data))
    if len(data) > SCHEMA_SAMPLE_ROWS and isinstance(type(dataset).__dict__.get("schema"), cached_property):
        sample = mlflow.data.from_pandas(data.head(SCHEMA_SAMPLE_ROWS), source=uri, name=MODEL_NAME, targets=TARGET,
                                         digest=dataset.digest)
        dataset.__dict__["schema"] = sample.schema  # what the cached property would have computed, sooner
    return dataset


def legacy_dataset_digest(data: pd.DataFrame) -> str:
    """The digest MLflow computed itself, which versions registered before `dataset.digest`
    recorded (data_tracking compares a baseline with it when the new one differs)."""
    from mlflow.data.digest_utils import compute_pandas_digest

    return compute_pandas_digest(data)


def card_facts(result: training.TrainingResult, data: pd.DataFrame, *, version: str, run_id: str,
               source: str, metrics: dict[str, float], decision: str, data_report: dict[str, Any] | None,
               data_run: str | None, backtests: list[dict[str, Any]] | None) -> model_card.CardFacts:
    from airflow_project.wachttijden.export_checks import category_counts

    day = lineage.export_date(source)
    return model_card.CardFacts(
        version=version, run_id=run_id, estimator=str(result.params.get("estimator", "")),
        training_data=source, export_day=None if day is None else f"{day:%Y-%m-%d}", rows=len(data),
        n_train=len(result.x_train), n_test=len(result.x_test), category_counts=category_counts(data),
        metrics=metrics, decision=decision, data_report=data_report, data_run=data_run,
        backtests_before=list(backtests or []),
    )


def find_identical(client: Any, key: str, name: str = MODEL_NAME) -> Any | None:
    """The registered version with this training key (the oldest, should there be several)."""
    found = client.search_model_versions(f"name='{name}' and tags.{lineage.TRAINING_KEY_TAG} = '{key}'")
    return min(found, key=lambda mv: int(mv.version)) if found else None


def unchanged_result(client: Any, mv: Any, digest: str) -> RegistrationResult:
    """What a training that matches version `mv` answers: that version, nothing registered."""
    run = client.get_run(mv.run_id)
    decision = (f"unchanged: version {mv.version} was trained on identical data (digest {digest}) with the same "
                f"configuration; nothing registered, no alias moved (force a new version with the train_model "
                f"Param force_retrain, or `mlops train --force`)")
    log.info("%s", decision)
    return RegistrationResult(run_id=mv.run_id, model_uri=model_uri(mv.version), version=str(mv.version),
                              promoted=False, metrics={k: float(run.data.metrics[k]) for k in MODEL_METRICS
                                                       if k in run.data.metrics},
                              decision=decision, registered=False)


@dataclass(frozen=True)
class Lineage:
    """Where a new version stands against the champion and challenger by export date."""

    export_day: Any  # dt.date | None
    champion: Any | None  # ModelVersion
    champion_day: Any
    challenger: Any | None
    challenger_day: Any

    @property
    def backfill(self) -> bool:
        """Trained on an export older than the champion's: no alias moves."""
        return lineage.is_older(self.export_day, self.champion_day)

    @property
    def takes_challenger(self) -> bool:
        return not self.backfill and not lineage.is_older(self.export_day, self.challenger_day)

    def backfill_decision(self) -> str:
        return (f"backfill: trained on the export of {lineage.fmt(self.export_day)}, older than champion "
                f"v{self.champion.version}'s export of {lineage.fmt(self.champion_day)}; registered, no alias "
                f"moved [{LINEAGE_RULE}]")

    def challenger_note(self) -> str:
        return (f"; challenger stays v{self.challenger.version}, trained on the newer export of "
                f"{lineage.fmt(self.challenger_day)} [{LINEAGE_RULE}]")


LINEAGE_RULE = ("rule: versions are ordered by the export date of their training data; a version trained on an "
                "export older than the champion's moves no alias")


def lineage_of(client: Any, source: str) -> Lineage:
    current, challenger = find_version(client, CHAMPION), find_version(client, CHALLENGER)
    return Lineage(
        export_day=lineage.export_date(source),
        champion=current, champion_day=None if current is None else lineage.version_export_date(client, current),
        challenger=challenger,
        challenger_day=None if challenger is None else lineage.version_export_date(client, challenger),
    )


def model_conda_env() -> dict[str, Any]:
    """The logged model's conda.yaml, with requirements.txt's pins. Given explicitly because
    MLflow, left to write it, looks up the installed pip to pin it, and a uv environment has
    none: every training logged `WARNING Failed to resolve installed pip version`
    (mlflow/utils/environment.py, `_mlflow_conda_env`)."""
    import platform

    return {"name": "mlflow-env", "channels": ["conda-forge"],
            "dependencies": [f"python={platform.python_version()}", "pip", {"pip": model_pip_requirements()}]}


@contextlib.contextmanager
def requirements_checked_already() -> Iterator[None]:
    """Skip MLflow's check that the logged requirements match the installed packages while a
    model is logged: ours are the installed versions by construction (model_pip_requirements),
    and the check maps every module of the environment to its distribution first
    (`importlib.metadata.packages_distributions()` over the whole uv environment: 1 - 2 s of
    each training, cProfile: `mlflow/utils/requirements_utils.py`,
    `_init_packages_to_modules_map`). The function `_process_conda_env` calls is looked up in
    mlflow.utils.environment (MLflow 3.17); without it, nothing is skipped."""
    from mlflow.utils import environment

    name = "warn_dependency_requirement_mismatches"
    original = getattr(environment, name, None)
    if original is None:
        yield
        return
    setattr(environment, name, lambda requirements: None)
    try:
        yield
    finally:
        setattr(environment, name, original)


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
    force: bool = False,
) -> RegistrationResult:
    """Train on `data`, log everything to MLflow, register, place the version by its export
    date and maybe promote it, and give it its model card; or, when a registered version was
    trained on identical data with the same configuration (and not `force`), register nothing
    and name that version.

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
    from airflow_project.wachttijden.dataset import digest as data_digest

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    digest = data_digest(data)
    key = lineage.training_key(digest, config)
    if not force and (same := find_identical(client, key)) is not None:
        return unchanged_result(client, same, digest)
    use_experiment(EXPERIMENT, artifact_location)

    result = training.train(data, config)
    _check_trusted(result.pipeline)  # the first skops import, silenced (see _import_skops)
    placed = lineage_of(client, source)
    day = placed.export_day
    version_tags = {lineage.TRAINING_KEY_TAG: key, lineage.DATA_DIGEST_TAG: digest,
                    **({lineage.EXPORT_DATE_TAG: f"{day:%Y-%m-%d}"} if day else {})}

    with mlflow.start_run(run_name=run_name) as run:
        mlflow.set_tags({"source": source, "model_name": MODEL_NAME, **version_tags, **(tags or {})})
        mlflow.log_params({**result.params, lineage.INPUT_PARAM: source, "rows": len(data),
                           "promotion_margin": BACKTEST_MARGIN})
        mlflow.log_metrics(result.metrics)
        if dataset_uri:
            mlflow.log_input(training_dataset(data, dataset_uri, digest), context="training")
        with tempfile.TemporaryDirectory() as tmp:
            plot = Path(tmp) / "predicted_vs_actual.png"
            plot.write_bytes(training.prediction_plot(result.y_test, result.predictions))
            mlflow.log_artifact(str(plot), artifact_path="plots")

        example = result.x_test.head(3)
        with requirements_checked_already():
            info = mlflow.sklearn.log_model(
                result.pipeline,
                name=ARTIFACT_NAME,
                serialization_format="skops",
                skops_trusted_types=list(SKOPS_TRUSTED_TYPES),
                signature=infer_signature(example, result.pipeline.predict(example)),
                input_example=example,
                registered_model_name=MODEL_NAME,
                conda_env=model_conda_env(),
            )
        version = str(info.registered_model_version)
        for tag, value in version_tags.items():
            client.set_model_version_tag(MODEL_NAME, version, tag, value)

        champion_mae = None
        if placed.backfill:
            promoted, decision = False, placed.backfill_decision()
            client.set_model_version_tag(MODEL_NAME, version, lineage.BACKFILL_TAG, "true")
            mlflow.set_tag(lineage.BACKFILL_TAG, "true")
        else:
            if placed.takes_challenger:
                client.set_registered_model_alias(MODEL_NAME, CHALLENGER, version)
            current = placed.champion
            champion_backtest = None
            if current is not None:
                champion_mae = score_version(current.version, result.x_test, result.y_test)
                mlflow.log_metric("champion_mae", champion_mae)
                champion_backtest = latest_backtest(client, current.run_id)
                if champion_backtest is not None:
                    mlflow.log_metric("champion_backtest_mae", champion_backtest.mae)
            promoted, decision = decide_promotion(
                result.metrics["mae"], champion_mae, None if current is None else str(current.version),
                champion_backtest,
            )
            if not placed.takes_challenger:
                decision += placed.challenger_note()
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
