"""Manifest builders: shape, KServe semantics, and strict validation against the KServe
SDK's (OpenAPI-generated) model classes: every key must be a known attribute of its class."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace

import pytest

from airflow_project.serving import manifests
from airflow_project.serving.manifests import Resources, ServingConfig


def _klass(name: str):
    import kserve.models
    import kubernetes.client.models

    return getattr(kserve.models, name, None) or getattr(kubernetes.client.models, name)


def validate(data, klass_name: str, path: str = "$") -> None:
    """Raise AssertionError when `data` does not fit the SDK type `klass_name`."""
    if klass_name.startswith("list["):
        assert isinstance(data, list), f"{path}: expected list"
        inner = klass_name[5:-1]
        for i, item in enumerate(data):
            validate(item, inner, f"{path}[{i}]")
        return
    m = re.match(r"dict[(\[]([^,]*), (.*)[)\]]$", klass_name)
    if m:
        assert isinstance(data, dict), f"{path}: expected dict"
        for k, v in data.items():
            validate(v, m.group(2), f"{path}.{k}")
        return
    natives = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}
    if klass_name in natives:
        assert isinstance(data, natives[klass_name]), f"{path}: expected {klass_name}, got {data!r}"
        return
    klass = _klass(klass_name)
    assert isinstance(data, dict), f"{path}: expected object for {klass_name}"
    by_json = {v: k for k, v in klass.attribute_map.items()}
    for key, value in data.items():
        assert key in by_json, f"{path}: {key!r} is not a field of {klass_name}"
        validate(value, klass.openapi_types[by_json[key]], f"{path}.{key}")


def sdk_object(data, klass_name: str):
    """Build the SDK object graph (runs the models' constructors and their validation)."""
    if klass_name.startswith("list["):
        return [sdk_object(x, klass_name[5:-1]) for x in data]
    m = re.match(r"dict[(\[]([^,]*), (.*)[)\]]$", klass_name)
    if m:
        return {k: sdk_object(v, m.group(2)) for k, v in data.items()}
    if klass_name in ("str", "int", "bool", "float", "object"):
        return data
    klass = _klass(klass_name)
    by_json = {v: k for k, v in klass.attribute_map.items()}
    return klass(**{by_json[k]: sdk_object(v, klass.openapi_types[by_json[k]]) for k, v in data.items()})


CONFIG = ServingConfig(namespace="serving", image="registry.local/airflow-project/predictor", image_tag="1.2.3",
                       tracking_uri="http://mlflow.mlflow:5000", service_account_name="predictor")


def test_inference_service_custom_predictor_container():
    isvc = manifests.inference_service("wachttijden-primary", "models:/wachttijden@champion", CONFIG)
    validate(isvc, "V1beta1InferenceService")
    obj = sdk_object(isvc, "V1beta1InferenceService")
    assert obj.spec.predictor.containers[0].name == "kserve-container"
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["metadata"]["namespace"] == "serving"
    [c] = isvc["spec"]["predictor"]["containers"]
    assert c["image"] == "registry.local/airflow-project/predictor:1.2.3"
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.mlflow:5000"
    assert "MODEL_URI" not in env  # one way to pass the model: the --model-uri flag
    assert c["args"][:2] == ["--model_name", "wachttijden"]  # KServe's controller reads this
    assert "models:/wachttijden@champion" in c["args"]
    assert c["command"] == ["mlops", "serve"]  # the predictor image's entry point
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/models/wachttijden/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["resources"] == Resources().to_dict()
    assert c["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert isvc["spec"]["predictor"]["securityContext"]["runAsNonRoot"] is True
    assert isvc["spec"]["predictor"]["serviceAccountName"] == "predictor"
    # no storage credentials anywhere: the model comes through the MLflow server
    assert not any(re.search(r"(?i)(key|secret|connection_string|password)", e["name"]) for e in c["env"])


def test_container_args_are_understood_by_our_cli():
    from airflow_project.serving.cli import parse_args

    isvc = manifests.inference_service("wachttijden-primary", "models:/wachttijden/3", CONFIG)
    args = parse_args(isvc["spec"]["predictor"]["containers"][0]["args"])
    assert (args.model_name, args.model_uri, args.http_port) == ("wachttijden", "models:/wachttijden/3", 8080)
    assert args.host == "0.0.0.0"  # in the pod: the Service reaches it; the CLI's own default is 127.0.0.1
    assert parse_args(["--model-uri", "models:/wachttijden/3"]).host == "127.0.0.1"


def test_the_manifest_command_is_the_predictor_images_entry_point():
    import json

    from airflow_project.serving.constants import PREDICTOR_COMMAND
    from airflow_project.settings import REPO_ROOT

    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    stage = dockerfile[dockerfile.index(" AS predictor"):]
    [entrypoint] = re.findall(r"^ENTRYPOINT (.+)$", stage, re.MULTILINE)
    assert tuple(json.loads(entrypoint)) == PREDICTOR_COMMAND
    [cmd] = re.findall(r"^CMD (\[.+)$", stage, re.MULTILINE)
    cmd_args = json.loads(cmd)
    assert cmd_args[cmd_args.index("--host") + 1] == "0.0.0.0"  # the image run alone listens for the network
    isvc = manifests.inference_service("wachttijden-primary", "models:/wachttijden/3", CONFIG)
    assert isvc["spec"]["predictor"]["containers"][0]["command"] == list(PREDICTOR_COMMAND)


def test_inference_graph_sequence_shadow_soft_then_primary_hard():
    graph = manifests.inference_graph("wachttijden-mirror", "wachttijden-primary", "wachttijden-shadow", CONFIG)
    validate(graph, "V1alpha1InferenceGraph")
    obj = sdk_object(graph, "V1alpha1InferenceGraph")
    assert obj.spec.nodes["root"].router_type == "Sequence"
    assert graph["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert graph["kind"] == "InferenceGraph"
    assert graph["spec"]["nodes"]["root"]["steps"] == [
        {"name": "shadow", "serviceName": "wachttijden-shadow", "data": "$request", "dependency": "Soft"},
        {"name": "primary", "serviceName": "wachttijden-primary", "data": "$request", "dependency": "Hard"},
    ]


def test_virtual_service_mirror():
    vs = manifests.virtual_service_mirror("wachttijden-primary", "wachttijden-shadow", CONFIG, percentage=25)
    assert vs["apiVersion"] == "networking.istio.io/v1"
    assert vs["kind"] == "VirtualService"
    [route] = vs["spec"]["http"]
    assert route["route"][0]["destination"]["host"] == "wachttijden-primary-predictor.serving.svc.cluster.local"
    assert route["mirror"]["host"] == "wachttijden-shadow-predictor.serving.svc.cluster.local"
    assert route["mirrorPercentage"] == {"value": 25.0}
    assert vs["spec"]["hosts"] == [route["route"][0]["destination"]["host"]]
    validate(vs["metadata"], "V1ObjectMeta")


def test_mirror_on_a_gateway_also_owns_the_primarys_external_host():
    config = replace(CONFIG, gateway="serving/serving-gateway", ingress_domain="models.wachttijden.nl")
    vs = manifests.virtual_service_mirror("wachttijden-primary", "wachttijden-shadow", config)
    assert vs["spec"]["hosts"] == [
        "wachttijden-primary-predictor.serving.svc.cluster.local",  # first: the in-cluster URL
        "wachttijden-primary-serving.models.wachttijden.nl",  # KServe's domainTemplate
    ]
    assert vs["spec"]["gateways"] == ["mesh", "serving/serving-gateway"]
    # without a gateway it binds to the mesh only (Istio's default): no gateways key
    assert "gateways" not in manifests.virtual_service_mirror("a", "b", CONFIG)["spec"]
    with pytest.raises(ValueError, match="ingress_domain"):
        manifests.virtual_service_mirror("a", "b", replace(CONFIG, gateway="serving/gw"))


def test_graph_ingress_route_serves_the_graphs_external_host_on_the_gateway():
    config = replace(CONFIG, gateway="serving/serving-gateway", ingress_domain="models.wachttijden.nl")
    vs = manifests.graph_ingress_route("wachttijden-graph", config)
    assert vs["metadata"]["name"] == "wachttijden-graph-ingress"
    # the host KServe puts in the graph's status.url (its domainTemplate), on the gateway only
    assert vs["spec"]["hosts"] == ["wachttijden-graph-serving.models.wachttijden.nl"]
    assert vs["spec"]["gateways"] == ["serving/serving-gateway"]
    [route] = vs["spec"]["http"]
    assert route["route"] == [{"destination": {"host": "wachttijden-graph.serving.svc.cluster.local",
                                               "port": {"number": 80}}}]
    with pytest.raises(ValueError, match="gateway and config.ingress_domain"):
        manifests.graph_ingress_route("wachttijden-graph", CONFIG)


def test_cluster_local_inference_service_gets_no_ingress_from_kserve():
    isvc = manifests.inference_service("wachttijden-primary", "models:/wachttijden/3", CONFIG, cluster_local=True)
    assert isvc["metadata"]["labels"]["networking.kserve.io/visibility"] == "cluster-local"
    assert isvc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "wachttijden"
    plain = manifests.inference_service("wachttijden-primary", "models:/wachttijden/3", CONFIG)
    assert "networking.kserve.io/visibility" not in plain["metadata"]["labels"]
    assert "networking.kserve.io/visibility" not in CONFIG.labels  # the config is not changed


@pytest.mark.parametrize("call", [
    lambda: manifests.inference_service("Bad_Name", "models:/wachttijden/1"),
    lambda: manifests.inference_service("ok", "runs:/abc/model"),
    lambda: manifests.inference_graph("g", "same", "same"),
    lambda: manifests.virtual_service_mirror("a", "b", percentage=101),
    lambda: ServingConfig(image="repo/predictor:tag"),
    lambda: ServingConfig(min_replicas=2, max_replicas=1),
])
def test_invalid_arguments_are_rejected(call):
    with pytest.raises(ValueError):
        call()


def test_manifests_module_imports_no_heavy_packages():
    code = (
        "import sys, airflow_project.serving.manifests, airflow_project.serving.constants\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('kserve', 'mlflow', 'kubernetes', 'sklearn', 'pandas')]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
