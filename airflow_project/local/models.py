"""The MLflow registry as `mlops up` sees it: versions and aliases, which two to serve,
and what the summary shows about them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow_project.local.config import TRAIN_DAG, LocalConfig
from airflow_project.local.errors import PlatformError
from airflow_project.registry import MODEL_METRICS

COMPARISON_METRICS = ("mae_primary_vs_shadow", "share_within_1_week", "mae_primary", "mae_shadow")


@dataclass(frozen=True)
class RegistryState:
    """Registered versions of the model and where its aliases point (version numbers)."""

    versions: tuple[int, ...]
    champion: int | None
    challenger: int | None
    newest_first: tuple[int, ...] = ()  # lineage order (lineage.newest_first); empty: by number


def needs_second_model(state: RegistryState) -> bool:
    """True when champion and challenger are one version (or missing): nothing to shadow yet."""
    return len({v for v in (state.champion, state.challenger) if v is not None}) < 2


def serving_versions(state: RegistryState) -> tuple[int, int]:
    """(primary, shadow): the champion, and the challenger when it differs, else the newest
    other version in lineage order (by its training data's export date, then its number, as
    deploy_traffic_mirroring picks it: a backfill of an old export is not the shadow); the
    champion itself when it is the only version."""
    if state.champion is None:
        raise PlatformError("the MLflow registry has no champion version to serve")
    if state.challenger is not None and state.challenger != state.champion:
        return state.champion, state.challenger
    order = state.newest_first or tuple(sorted(state.versions, reverse=True))
    others = [v for v in order if v != state.champion]
    return state.champion, others[0] if others else state.champion


def mlflow_client(config: LocalConfig) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=config.mlflow_uri, registry_uri=config.mlflow_uri)


def registry_state(config: LocalConfig) -> RegistryState:
    from airflow_project.lineage import newest_first
    from airflow_project.registry import CHALLENGER, CHAMPION, find_version
    from airflow_project.wachttijden.schema import MODEL_NAME

    client = mlflow_client(config)
    found = client.search_model_versions(f"name='{MODEL_NAME}'")
    versions = tuple(sorted(int(v.version) for v in found))
    if not versions:
        raise PlatformError(f"{TRAIN_DAG} succeeded but MLflow has no version of model {MODEL_NAME!r}")
    aliases: dict[str, int | None] = {}
    for alias in (CHAMPION, CHALLENGER):
        mv = find_version(client, alias)
        aliases[alias] = None if mv is None else int(mv.version)
    return RegistryState(versions=versions, champion=aliases[CHAMPION], challenger=aliases[CHALLENGER],
                         newest_first=tuple(int(mv.version) for mv in newest_first(client, found)))


def version_aliases(config: LocalConfig) -> dict[str, list[str]] | None:
    """{version: [aliases]} of the registered model now; None when the registry does not answer."""
    from airflow_project.wachttijden.schema import MODEL_NAME

    try:
        aliases = mlflow_client(config).get_registered_model(MODEL_NAME).aliases or {}
    except Exception:  # noqa: BLE001 - status reports what it can
        return None
    out: dict[str, list[str]] = {}
    for alias, version in sorted(aliases.items()):
        out.setdefault(str(version), []).append(alias)
    return out


@dataclass
class ModelSummary:
    name: str
    version: str
    aliases: list[str]
    metrics: dict[str, float]
    decision: str
    estimator: str = ""


def model_summary(config: LocalConfig, version: int, registry: RegistryState) -> ModelSummary:
    from airflow_project.registry import CHALLENGER, CHAMPION
    from airflow_project.wachttijden.schema import MODEL_NAME

    client = mlflow_client(config)
    mv = client.get_model_version(MODEL_NAME, str(version))
    run = client.get_run(mv.run_id)
    metrics = {k: float(v) for k, v in run.data.metrics.items() if k in MODEL_METRICS}
    decision = (mv.tags or {}).get("promotion_decision") or run.data.tags.get("promotion_decision", "")
    aliases = [a for a, v in ((CHALLENGER, registry.challenger), (CHAMPION, registry.champion)) if v == version]
    return ModelSummary(
        name=MODEL_NAME, version=str(version), aliases=aliases, metrics=metrics, decision=decision,
        estimator=run.data.params.get("estimator", ""),
    )


@dataclass(frozen=True)
class ShadowComparison:
    experiment: str
    url: str
    metrics: dict[str, float]
    run_name: str = ""
    shadow_beat_primary: bool = False  # the run's tag deploy_steps.SHADOW_BEAT_TAG


def runs_url(config: LocalConfig, experiment_id: str) -> str:
    """The MLflow UI's runs view of an experiment (the UI's start page is its GenAI overview)."""
    return f"{config.mlflow_uri}/#/experiments/{experiment_id}/runs"


def training_runs_url(config: LocalConfig) -> str:
    """The training runs in the MLflow UI, or the UI itself before the experiment exists."""
    from airflow_project.registry import EXPERIMENT

    experiment = mlflow_client(config).get_experiment_by_name(EXPERIMENT)
    return config.mlflow_uri if experiment is None else runs_url(config, experiment.experiment_id)


def shadow_comparison(config: LocalConfig) -> ShadowComparison | None:
    """The MLflow experiment of the shadow comparison and its newest run's metrics."""
    from airflow_project.deploy_steps import SHADOW_BEAT_TAG, SHADOW_EXPERIMENT

    client = mlflow_client(config)
    experiment = client.get_experiment_by_name(SHADOW_EXPERIMENT)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    metrics = {k: float(v) for k, v in (runs[0].data.metrics.items() if runs else []) if k in COMPARISON_METRICS}
    return ShadowComparison(
        experiment=SHADOW_EXPERIMENT, url=runs_url(config, experiment.experiment_id),
        metrics=metrics, run_name=runs[0].info.run_name if runs else "",
        shadow_beat_primary=bool(runs) and runs[0].data.tags.get(SHADOW_BEAT_TAG) == "true",
    )


@dataclass(frozen=True)
class DataReport:
    """The newest data-check run of an export: its one-line headline and where to see it."""

    export: str
    headline: str
    url: str


def data_report(config: LocalConfig, export: str) -> DataReport | None:
    """The newest run of experiment `wachttijden-data` for this raw export, if any."""
    from airflow_project.data_tracking import HEADLINE_TAG, newest_data_run

    run = newest_data_run(mlflow_client(config), f"tags.export = '{export}'")
    if run is None:
        return None
    return DataReport(export=export, headline=run.data.tags.get(HEADLINE_TAG, ""),
                      url=f"{runs_url(config, run.info.experiment_id)}/{run.info.run_id}")
