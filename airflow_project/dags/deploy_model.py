"""
### Deploy a registered model version

Resolves the **model** param (a version number such as `3`, or an alias such as
`champion`) in the MLflow registry (model `wachttijden`), builds a KServe
InferenceService for that exact version, applies it to the deploy target, waits
until it is Ready and smoke-tests one prediction.

The deploy target comes from the environment: `MLOPS_DEPLOY_TARGET=kubernetes`
(server-side apply into the serving namespace, connection `kubernetes_serving`) or
`local` (default: a model-server process on 127.0.0.1 managed by the local serving
controller under `$MLOPS_HOME/serving/`). Re-running with the same version is a no-op;
another version replaces the running predictor.

A version or alias that does not exist fails the run at once, naming what exists.
Manual trigger only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import Param, dag, task

from airflow_project.dag_defaults import DAG_DEFAULTS, serving_namespace_param
from airflow_project.serving.constants import MODEL_SERVICE, NAME_PATTERN

if TYPE_CHECKING:
    from airflow_project.deploy_steps import ModelVersion, PredictorDeployment, SmokeResult


@dag(
    dag_id="deploy_model",
    schedule=None,
    **DAG_DEFAULTS,
    tags=["wachttijden", "serving", "kserve"],
    doc_md=__doc__,
    params={
        "model": Param(
            "champion", type="string", minLength=1,
            title="Model version or alias",
            description="Registered version number of model 'wachttijden' (e.g. 3) or an alias "
            "(champion, challenger).",
        ),
        "service_name": Param(
            MODEL_SERVICE, type="string", pattern=NAME_PATTERN,
            title="Service name",
            description="InferenceService name (DNS-1035 label); one predictor per name.",
        ),
        "namespace": serving_namespace_param(),
        "timeout_seconds": Param(
            600, type="integer", minimum=10, maximum=3600,
            title="Ready timeout (s)",
            description="How long to wait for the InferenceService to become Ready.",
        ),
    },
)
def deploy_model():
    @task(multiple_outputs=True)
    def resolve_version(*, params: dict) -> ModelVersion:
        """Version number or alias -> a registered version (fails at once if unknown)."""
        from airflow_project.deploy_steps import resolve_version
        from airflow_project.task_context import fail_on_bad_input

        with fail_on_bad_input():
            return resolve_version(params["model"])

    @task(multiple_outputs=True)
    def deploy(version: ModelVersion, *, params: dict) -> PredictorDeployment:
        """Apply the InferenceService and wait until it is Ready."""
        from airflow_project.deploy_steps import deploy_predictor

        deployed = deploy_predictor(params["service_name"], version["model_uri"], namespace=params["namespace"] or None,
                                    timeout=float(params["timeout_seconds"]))
        return deployed | {"version": version["version"]}

    @task(multiple_outputs=True)
    def smoke_test(service: PredictorDeployment) -> SmokeResult:
        """One prediction through the deployed predictor."""
        from airflow_project.deploy_steps import smoke_test

        return smoke_test(service["url"], service["model_name"]) | {"version": service["version"]}

    smoke_test(deploy(resolve_version()))


deploy_model()
