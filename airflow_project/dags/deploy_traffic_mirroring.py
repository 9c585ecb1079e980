"""
### Shadow-deploy the challenger next to the champion

Deploys two InferenceServices, **primary** (default alias `champion`) and **shadow**
(default alias `challenger`), then the traffic mirror:

- `graph`: a KServe InferenceGraph, Sequence `[shadow (Soft), primary (Hard)]`: every
  request reaches both, the caller gets the primary's answer. Works without a mesh, but
  latencies add up and an unreachable shadow fails the request.
- `virtualservice` (Kubernetes with Istio): `VirtualService.mirror` on the primary's
  host, fire-and-forget copies to the shadow; no added latency, a dead shadow is harmless.
  (The local target emulates it with a mirror-mode router.)
- `both`.

`compare_shadow` then sends a sample of the hold-out rows of the newest preprocessed
dataset (split as training does) through the entry point, asks the shadow the same rows,
and logs agreement (MAE between the two, share within 1 week, MAE of each against the
true waiting time) as a run in MLflow experiment `wachttijden-shadow`.

Deploy target: `MLOPS_DEPLOY_TARGET` (`local` default, or `kubernetes`). Manual trigger only.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from airflow_project.dag_defaults import IO_RETRIES, START_DATE
from airflow_project.serving.constants import (
    GRAPH_NAME,
    NAME_PATTERN,
    PRIMARY_SERVICE,
    SHADOW_SERVICE,
)


@dag(
    dag_id="deploy_traffic_mirroring",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=IO_RETRIES,
    tags=["wachttijden", "serving", "kserve", "shadow"],
    doc_md=__doc__,
    params={
        "primary_model": Param(
            "champion", type="string", minLength=1, title="Primary model",
            description="Version number or alias of 'wachttijden' that answers requests.",
        ),
        "shadow_model": Param(
            "challenger", type="string", minLength=1, title="Shadow model",
            description="Version number or alias of 'wachttijden' that receives copies.",
        ),
        "primary_service": Param(
            PRIMARY_SERVICE, type="string", pattern=NAME_PATTERN, title="Primary service",
            description="InferenceService name of the primary.",
        ),
        "shadow_service": Param(
            SHADOW_SERVICE, type="string", pattern=NAME_PATTERN, title="Shadow service",
            description="InferenceService name of the shadow.",
        ),
        "graph_name": Param(
            GRAPH_NAME, type="string", pattern=NAME_PATTERN, title="Graph name",
            description="InferenceGraph name (mode graph or both).",
        ),
        "namespace": Param(
            "", type="string", title="Namespace",
            description="Serving namespace. Empty: MLOPS_SERVING_NAMESPACE of the deployment.",
        ),
        "mirror_mode": Param(
            "graph", enum=["graph", "virtualservice", "both"], title="Mirror mode",
            description="graph: InferenceGraph; virtualservice: Istio mirror (Kubernetes with "
            "Istio); both.",
        ),
        "mirror_percentage": Param(
            100.0, type="number", minimum=0, maximum=100, title="Mirror percentage",
            description="Share of requests the VirtualService copies to the shadow.",
        ),
        "sample_size": Param(
            200, type="integer", minimum=1, maximum=10000, title="Comparison sample size",
            description="Hold-out rows compare_shadow sends through the mirror.",
        ),
        "timeout_seconds": Param(
            600, type="integer", minimum=10, maximum=3600, title="Ready timeout (s)",
            description="How long to wait for each object to become Ready.",
        ),
    },
)
def deploy_traffic_mirroring():
    @task
    def resolve_versions(**context) -> dict:
        """Primary and shadow versions (fails at once if one does not exist)."""
        from airflow.sdk.exceptions import AirflowFailException

        from airflow_project.deploy_tasks import resolve_version
        from airflow_project.registry import ModelVersionNotFound

        params = context["params"]
        try:
            return {"primary": resolve_version(params["primary_model"]),
                    "shadow": resolve_version(params["shadow_model"])}
        except (ModelVersionNotFound, ValueError) as exc:
            raise AirflowFailException(str(exc)) from exc

    @task
    def deploy_primary(versions: dict, **context) -> dict:
        """InferenceService for the primary, Ready."""
        from airflow_project.deploy_tasks import deploy_predictor

        p = context["params"]
        return deploy_predictor(p["primary_service"], versions["primary"]["model_uri"],
                                namespace=p["namespace"] or None, timeout=float(p["timeout_seconds"]))

    @task
    def deploy_shadow(versions: dict, **context) -> dict:
        """InferenceService for the shadow, Ready."""
        from airflow_project.deploy_tasks import deploy_predictor

        p = context["params"]
        return deploy_predictor(p["shadow_service"], versions["shadow"]["model_uri"],
                                namespace=p["namespace"] or None, timeout=float(p["timeout_seconds"]))

    @task
    def deploy_mirror(primary: dict, shadow: dict, **context) -> dict:
        """InferenceGraph and/or VirtualService mirror; smoke test through the entry."""
        from airflow_project.deploy_tasks import deploy_mirroring, smoke_test

        p = context["params"]
        mirror = deploy_mirroring(
            p["graph_name"], primary["service"], shadow["service"], mode=p["mirror_mode"],
            percentage=float(p["mirror_percentage"]), namespace=p["namespace"] or None,
            timeout=float(p["timeout_seconds"]),
        )
        smoke_test(mirror["entry_url"], graph="graph_url" in mirror)
        return mirror | {"shadow_url": shadow["url"], "model_name": primary["model_name"]}

    @task
    def compare_shadow(mirror: dict, versions: dict, **context) -> dict:
        """Hold-out sample through the mirror; agreement metrics to MLflow."""
        from airflow_project.dag_tasks import data_lake
        from airflow_project.deploy_tasks import compare_shadow
        from airflow_project.pipeline_steps import latest_preprocessed
        from airflow_project.wachttijden.dataset import read_prepared

        lake = data_lake()
        ref = latest_preprocessed(lake)
        frame = read_prepared(lake.read(ref), str(ref))
        return compare_shadow(
            mirror["entry_url"], mirror["shadow_url"], frame,
            sample_size=int(context["params"]["sample_size"]), model_name=mirror["model_name"],
            entry_is_graph="graph_url" in mirror, dataset=str(ref),
            primary=versions["primary"], shadow=versions["shadow"],
            tags={"airflow_dag_id": context["dag"].dag_id, "airflow_run_id": context["dag_run"].run_id,
                  "mirror_mode": mirror["mode"]},
        )

    versions = resolve_versions()
    mirror = deploy_mirror(deploy_primary(versions), deploy_shadow(versions))
    compare_shadow(mirror, versions)


deploy_traffic_mirroring()
