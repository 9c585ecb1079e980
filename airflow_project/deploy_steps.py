"""What the deploy DAGs' tasks do, without Airflow: resolve a registered version, deploy a
predictor and the traffic mirror to the deploy target, smoke-test them, and compare the
shadow with the primary. Each step returns a typed, JSON-serialisable result (a task's
XCom); the README ("Deploying", "Traffic mirroring") describes targets and metrics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NotRequired, TypedDict

from airflow_project import lineage, registry
from airflow_project.wachttijden.categories import SAMPLE_ROW
from airflow_project.wachttijden.schema import FEATURES, MODEL_NAME

log = logging.getLogger(__name__)

SHADOW_EXPERIMENT = "wachttijden-shadow"
WITHIN_WEEKS = 1.0
BATCH_ROWS = 1000


class SmokeTestError(RuntimeError):
    """The deployed service did not answer a prediction correctly."""


class ModelVersion(TypedDict):
    name: str
    requested: str  # what the Param said: a number or an alias
    version: str
    model_uri: str  # pinned by number: a moved alias changes the manifest
    run_id: str
    aliases: list[str]
    note: NotRequired[str]  # why this is not the version `requested` resolves to


class SelfComparisonError(ValueError):
    """Primary and shadow would be one version, and no other version can stand in."""


class PredictorDeployment(TypedDict):
    target: str
    namespace: str
    service: str
    model_uri: str
    url: str
    model_name: str
    version: NotRequired[str]  # deploy_model adds the version it deployed


class MirrorDeployment(TypedDict):
    target: str
    namespace: str
    mode: str
    primary: str
    shadow: str
    entry_url: str  # where requests reach primary and shadow: the graph, else the mirrored primary
    entry_is_graph: bool  # the graph router answers any path; a predictor only its own
    graph: NotRequired[str]
    graph_url: NotRequired[str]
    graph_host: NotRequired[str]  # the graph's external host on the gateway (Kubernetes)
    virtual_service: NotRequired[str]
    mirror_url: NotRequired[str]
    shadow_url: NotRequired[str]  # added by the DAG: the shadow's own URL, for the comparison
    model_name: NotRequired[str]


class SmokeResult(TypedDict):
    url: str
    request: dict[str, Any]
    response: dict[str, Any]
    prediction: float
    version: NotRequired[str]


class ComparisonResult(TypedDict):
    run_id: str
    experiment: str
    metrics: dict[str, float]


# --------------------------------------------------------------------------- registry
def resolve_version(model: str | int, *, name: str = MODEL_NAME, tracking_uri: str | None = None) -> ModelVersion:
    """Version number or alias -> the registered version, pinned by number."""
    from mlflow import MlflowClient

    return _resolve(MlflowClient(tracking_uri), model, name)


def _resolve(client: Any, model: str | int, name: str) -> ModelVersion:
    ref = str(model).strip()
    if not ref:
        raise ValueError("model must be a version number or an alias, got an empty string")
    mv = registry.require_version(client, ref, name)
    return _model_version(mv, ref, name)


def _model_version(mv: Any, ref: str, name: str) -> ModelVersion:
    version = str(mv.version)
    result = ModelVersion(
        name=name,
        requested=ref,
        version=version,
        model_uri=registry.model_uri(version, name),
        run_id=mv.run_id,
        aliases=sorted(getattr(mv, "aliases", None) or ([] if ref.isdigit() else [ref])),
    )
    log.info("model %s %s -> version %s (%s)", name, ref, version, result["model_uri"])
    return result


def resolve_mirror_versions(primary: str | int, shadow: str | int, *, name: str = MODEL_NAME,
                            tracking_uri: str | None = None, client: Any = None) -> dict[str, ModelVersion]:
    """Primary and shadow versions for a mirror, never one version compared with itself.

    When both resolve to the same version (e.g. `champion` and `challenger` after the
    challenger was promoted) and the shadow was named by an alias, the newest other version
    in lineage order (its training data's export date, then its number: `lineage.newest_first`)
    becomes the shadow, with a `note` saying so.
    A shadow named by the primary's own version number, or a registry without another
    version, fails at once, naming the aliases and versions.
    """
    if client is None:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri)
    first, second = _resolve(client, primary, name), _resolve(client, shadow, name)
    if first["version"] != second["version"]:
        return {"primary": first, "shadow": second}
    same = (f"primary {first['requested']!r} and shadow {second['requested']!r} both resolve to version "
            f"{first['version']} of model {name!r}")
    others = [v for v in client.search_model_versions(f"name='{name}'") if str(v.version) != first["version"]]
    if second["requested"].isdigit() or not others:
        why = ("a shadow named by number must be another version" if others
               else "the registry has no other version to shadow")
        raise SelfComparisonError(f"{same}: {why} ({registry.describe_registry(client, name)}); "
                                  "train another version or pass another shadow_model")
    newest = lineage.newest_first(client, others)[0]
    stand_in = _model_version(registry.require_version(client, str(newest.version), name), second["requested"], name)
    day = lineage.version_export_date(client, newest)
    stand_in["note"] = (f"{same}: shadowing the newest other version {newest.version} instead (by the export date "
                        f"of its training data, {lineage.fmt(day)}, then its number)")
    log.warning("%s", stand_in["note"])
    return {"primary": first, "shadow": stand_in}


# --------------------------------------------------------------------------- deploying
def deploy_predictor(
    service_name: str,
    model_uri: str,
    *,
    namespace: str | None = None,
    timeout: float = 600.0,
    target: Any | None = None,
    cluster_local: bool = False,
) -> PredictorDeployment:
    """Apply an InferenceService for `model_uri` and wait until it is Ready
    (`cluster_local`: no ingress of its own, see `manifests.inference_service`)."""
    from airflow_project.serving.constants import INFERENCE_SERVICE
    from airflow_project.serving.manifests import inference_service
    from airflow_project.serving.targets import serving_config_from_env, target_from_env

    target = target or target_from_env(namespace)
    config = serving_config_from_env(target.namespace)
    manifest = inference_service(service_name, model_uri, config, cluster_local=cluster_local)
    target.apply(manifest)
    url = target.wait_ready(INFERENCE_SERVICE, service_name, timeout)
    log.info("InferenceService %s/%s ready at %s (%s)", target.namespace, service_name, url, model_uri)
    return PredictorDeployment(target=target.name, namespace=target.namespace, service=service_name,
                               model_uri=model_uri, url=url, model_name=config.served_model_name)


MIRROR_MODES = ("graph", "virtualservice", "both")


def deploy_mirroring(
    graph_name: str,
    primary: str,
    shadow: str,
    *,
    mode: str = "graph",
    percentage: float = 100.0,
    namespace: str | None = None,
    timeout: float = 600.0,
    target: Any | None = None,
) -> MirrorDeployment:
    """InferenceGraph (mode graph/both) and/or Istio VirtualService mirror (virtualservice/both).

    Behind a gateway (`MLOPS_SERVING_GATEWAY`, Kubernetes) the graph also gets the route that
    serves its external host (`manifests.graph_ingress_route`): KServe creates none."""
    from airflow_project.serving.constants import INFERENCE_GRAPH, VIRTUAL_SERVICE
    from airflow_project.serving.manifests import (
        graph_ingress_route,
        inference_graph,
        virtual_service_mirror,
    )
    from airflow_project.serving.targets import serving_config_from_env, target_from_env

    if mode not in MIRROR_MODES:
        raise ValueError(f"mirror mode must be one of {MIRROR_MODES}, got {mode!r}")
    target = target or target_from_env(namespace)
    config = serving_config_from_env(target.namespace)
    with_graph = mode in ("graph", "both")
    out = MirrorDeployment(target=target.name, namespace=target.namespace, mode=mode, primary=primary,
                           shadow=shadow, entry_url="", entry_is_graph=with_graph)
    if with_graph:
        target.apply(inference_graph(graph_name, primary, shadow, config))
        out.update(graph=graph_name, graph_url=target.wait_ready(INFERENCE_GRAPH, graph_name, timeout))
        if config.gateway:
            route = graph_ingress_route(graph_name, config)
            target.apply(route)
            target.wait_ready(VIRTUAL_SERVICE, route["metadata"]["name"], timeout)
            out["graph_host"] = route["spec"]["hosts"][0]
    if mode in ("virtualservice", "both"):
        vs = virtual_service_mirror(primary, shadow, config, percentage=percentage)
        target.apply(vs)
        name = vs["metadata"]["name"]
        out.update(virtual_service=name, mirror_url=target.wait_ready(VIRTUAL_SERVICE, name, timeout))
    out["entry_url"] = out["graph_url"] if with_graph else out["mirror_url"]
    log.info("mirroring %s -> %s ready (%s) at %s", primary, shadow, mode, out["entry_url"])
    return out


# --------------------------------------------------------------------------- HTTP
def _predict(url: str, rows: Sequence[Mapping[str, Any]], model_name: str = MODEL_NAME,
             *, timeout: float = 60.0, graph: bool = False) -> list[float]:
    """V1 predictions for rows; `graph=True` posts to the router's root (it ignores paths)."""
    import httpx

    from airflow_project.serving.constants import predict_path

    target = url.rstrip("/") + ("" if graph else predict_path(model_name))
    out: list[float] = []
    for start in range(0, len(rows), BATCH_ROWS):
        chunk = [dict(r) for r in rows[start:start + BATCH_ROWS]]
        response = httpx.post(target, json={"instances": chunk}, timeout=timeout)
        if response.status_code != 200:
            raise SmokeTestError(f"POST {target} answered {response.status_code}: {response.text[:500]}")
        predictions = response.json().get("predictions")
        if not isinstance(predictions, list) or len(predictions) != len(chunk):
            raise SmokeTestError(f"POST {target}: expected {len(chunk)} predictions, got {response.text[:500]}")
        out.extend(float(p) for p in predictions)
    return out


def smoke_test(url: str, model_name: str = MODEL_NAME, *, row: Mapping[str, str] | None = None,
               graph: bool = False, timeout: float = 120.0, delay: float = 2.0,
               clock: Callable[[], float] | None = None,
               sleep: Callable[[float], None] | None = None) -> SmokeResult:
    """One prediction through `url`, retried for up to `timeout` seconds: a fresh Service may
    have no ready endpoint yet (KServe reports a graph Ready once its router Deployment has
    an Available condition, whatever its status: raw_ig.go PropagateRawStatus)."""
    import time

    import httpx

    clock, sleep = clock or time.monotonic, sleep or time.sleep
    row = dict(row or SAMPLE_ROW)
    deadline = clock() + timeout
    attempts, last = 0, None
    while True:
        attempts += 1
        try:
            [prediction] = _predict(url, [row], model_name, graph=graph)
            if not math.isfinite(prediction) or prediction < 0:
                raise SmokeTestError(f"{url}: prediction {prediction} is not a waiting time in weeks")
            log.info("smoke test %s: %s -> %.2f weeks", url, row, prediction)
            return SmokeResult(url=url, request={"instances": [row]}, response={"predictions": [prediction]},
                               prediction=prediction)
        except (httpx.HTTPError, SmokeTestError) as exc:
            last = exc
        if clock() + delay > deadline:
            break
        sleep(delay)
    raise SmokeTestError(f"smoke test against {url} failed for {timeout:.0f}s ({attempts} attempts): {last}")


# --------------------------------------------------------------------------- shadow comparison
def holdout_sample(frame: Any, sample_size: int, seed: int = 0) -> tuple[Any, Any]:
    """The default TrainingConfig's hold-out rows, `sample_size` of them (all if fewer)."""
    from airflow_project.wachttijden.training import TrainingConfig, split

    _x_train, x_test, _y_train, y_test = split(frame, TrainingConfig())
    n = min(int(sample_size), len(x_test))
    x = x_test.sample(n=n, random_state=seed)
    return x, y_test.loc[x.index]


def agreement(primary: Sequence[float], shadow: Sequence[float], actual: Sequence[float] | None = None) -> dict[str, float]:
    """MAE between primary and shadow, share within 1 week, max difference (+ MAEs vs actual)."""
    import numpy as np

    p, s = np.asarray(primary, dtype=float), np.asarray(shadow, dtype=float)
    if p.shape != s.shape or p.size == 0:
        raise ValueError(f"need equally many primary and shadow predictions, got {p.size} and {s.size}")
    diff = np.abs(p - s)
    metrics = {
        "rows": float(p.size),
        "mae_primary_vs_shadow": float(diff.mean()),
        "share_within_1_week": float((diff <= WITHIN_WEEKS).mean()),
        "max_abs_diff_weeks": float(diff.max()),
    }
    if actual is not None:
        y = np.asarray(actual, dtype=float)
        metrics["mae_primary"] = float(np.abs(p - y).mean())
        metrics["mae_shadow"] = float(np.abs(s - y).mean())
    return metrics


SHADOW_BEAT_TAG = "shadow_beat_primary"
"""Tag of a comparison run: `true` when the shadow's MAE against the true waiting times is
below the primary's on the compared rows (a candidate for promotion worth a look)."""


def shadow_beat_primary(metrics: Mapping[str, float]) -> bool:
    return "mae_shadow" in metrics and "mae_primary" in metrics and metrics["mae_shadow"] < metrics["mae_primary"]


def compare_shadow(
    entry_url: str,
    shadow_url: str,
    frame: Any,
    *,
    sample_size: int = 200,
    seed: int = 0,
    model_name: str = MODEL_NAME,
    entry_is_graph: bool = True,
    dataset: str = "",
    primary: Mapping[str, Any] | None = None,
    shadow: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> ComparisonResult:
    """Send hold-out rows through the entry, ask the shadow the same rows directly, log the
    agreement as one run of MLflow experiment `wachttijden-shadow`."""
    import mlflow

    if sample_size < 1:
        raise ValueError(f"sample_size must be at least 1, got {sample_size}")
    x, y = holdout_sample(frame, sample_size, seed)
    rows = x.loc[:, list(FEATURES)].astype(str).to_dict(orient="records")
    primary_pred = _predict(entry_url, rows, model_name, graph=entry_is_graph)
    shadow_pred = _predict(shadow_url, rows, model_name)
    metrics = agreement(primary_pred, shadow_pred, y.tolist())

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    primary, shadow = dict(primary or {}), dict(shadow or {})
    run_name = f"v{primary.get('version', '?')}-vs-v{shadow.get('version', '?')}"
    beat = shadow_beat_primary(metrics)
    with registry.mlflow_logs_at_their_level():
        registry.use_experiment(SHADOW_EXPERIMENT)
        with mlflow.start_run(run_name=run_name) as run:
            mlflow.set_tags({"model_name": MODEL_NAME, SHADOW_BEAT_TAG: str(beat).lower(), **dict(tags or {})})
            mlflow.log_params({
                "primary_version": primary.get("version", ""), "primary_model_uri": primary.get("model_uri", ""),
                "shadow_version": shadow.get("version", ""), "shadow_model_uri": shadow.get("model_uri", ""),
                "entry_url": entry_url, "shadow_url": shadow_url, "dataset": dataset,
                "sample_size": int(sample_size), "seed": seed, "within_weeks": WITHIN_WEEKS,
            })
            mlflow.log_metrics(metrics)
    log.info("shadow comparison %s (run %s): %s", run_name, run.info.run_id, metrics)
    if beat:
        log.info("the shadow v%s beat the primary v%s on these rows: mae %.4f < %.4f", shadow.get("version", "?"),
                 primary.get("version", "?"), metrics["mae_shadow"], metrics["mae_primary"])
    return ComparisonResult(run_id=run.info.run_id, experiment=SHADOW_EXPERIMENT, metrics=metrics)

