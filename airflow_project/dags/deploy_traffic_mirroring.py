"""
### Shadow-deploy the challenger next to the champion

Deploys two InferenceServices, **primary** (default alias `champion`) and **shadow**
(default alias `challenger`; when both aliases point to one version, the other version
with the newest training export), then the traffic mirror:

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

from typing import TYPE_CHECKING

from airflow.sdk import Param, dag, task

from airflow_project.dag_defaults import DAG_DEFAULTS, serving_namespace_param
from airflow_project.serving.constants import (
    GRAPH_NAME,
    NAME_PATTERN,
    PRIMARY_SERVICE,
    SHADOW_SERVICE,
)

if TYPE_CHECKING:
    from airflow_project.deploy_steps import (
        ComparisonResult,
        MirrorDeployment,
        ModelVersion,
        PredictorDeployment,
    )


@dag(
    dag_id="deploy_traffic_mirroring",
    schedule=None,
    **DAG_DEFAULTS,
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
        "namespace": serving_namespace_param(),
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
    @task(multiple_outputs=True)
    def resolve_versions(*, params: dict) -> dict[str, ModelVersion]:
        """Primary and shadow versions; never one version against itself (fails at once if
        a version does not exist, or no other version can be the shadow)."""
        from airflow_project.deploy_steps import resolve_mirror_versions
        from airflow_project.task_context import fail_on_bad_input

        with fail_on_bad_input():
            return resolve_mirror_versions(params["primary_model"], params["shadow_model"])

    @task(multiple_outputs=True)
    def deploy(version: ModelVersion, role: str, *, params: dict) -> PredictorDeployment:
        """InferenceService for the primary or the shadow (`role`), Ready."""
        from airflow_project.deploy_steps import deploy_predictor

        # Istio mirror: the VirtualService owns the primary's external host, so neither
        # predictor gets an Ingress of its own (manifests.inference_service).
        return deploy_predictor(params[f"{role}_service"], version["model_uri"], namespace=params["namespace"] or None,
                                timeout=float(params["timeout_seconds"]),
                                cluster_local=params["mirror_mode"] != "graph")

    @task(multiple_outputs=True)
    def deploy_mirror(primary: PredictorDeployment, shadow: PredictorDeployment, *,
                      params: dict) -> MirrorDeployment:
        """InferenceGraph and/or VirtualService mirror; smoke test through the entry."""
        from airflow_project.deploy_steps import deploy_mirroring, smoke_test

        mirror = deploy_mirroring(
            params["graph_name"], primary["service"], shadow["service"], mode=params["mirror_mode"],
            percentage=float(params["mirror_percentage"]), namespace=params["namespace"] or None,
            timeout=float(params["timeout_seconds"]),
        )
        smoke_test(mirror["entry_url"], graph=mirror["entry_is_graph"])
        return mirror | {"shadow_url": shadow["url"], "model_name": primary["model_name"]}

    @task(multiple_outputs=True)
    def compare_shadow(mirror: MirrorDeployment, versions: dict[str, ModelVersion], *, params: dict,
                       dag_run=None) -> ComparisonResult:
        """Hold-out sample through the mirror; agreement metrics to MLflow."""
        from airflow_project.data_steps import newest_prepared
        from airflow_project.deploy_steps import compare_shadow
        from airflow_project.task_context import data_lake

        frame, dataset = newest_prepared(data_lake())
        return compare_shadow(
            mirror["entry_url"], mirror["shadow_url"], frame, sample_size=int(params["sample_size"]),
            model_name=mirror["model_name"], entry_is_graph=mirror["entry_is_graph"], dataset=dataset,
            primary=versions["primary"], shadow=versions["shadow"],
            tags={"airflow_dag_id": dag_run.dag_id, "airflow_run_id": dag_run.run_id, "mirror_mode": mirror["mode"]},
        )

    versions = resolve_versions()
    primary = deploy.override(task_id="deploy_primary")(versions["primary"], "primary")
    shadow = deploy.override(task_id="deploy_shadow")(versions["shadow"], "shadow")
    compare_shadow(deploy_mirror(primary, shadow), versions)


deploy_traffic_mirroring()
