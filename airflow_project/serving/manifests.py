"""Manifest builders for both deploy targets: pure functions returning plain dicts (no
kserve/mlflow/kubernetes imports, DAG files import this module at parse time).

An InferenceService with our predictor as custom container; an InferenceGraph Sequence
[shadow: Soft, primary: Hard], so the primary answers; an Istio VirtualService mirroring the
primary to the shadow, which on a gateway also owns the primary's external host (the
primary is then cluster-local); an Istio VirtualService that serves a graph's external host
on the gateway (KServe's Standard mode gives a graph no Ingress). Which mirror when: README
("Traffic mirroring").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from airflow_project.serving.constants import (
    CAPTURE_PATH,
    CAPTURE_REQUEST_ID_HEADER,
    CAPTURE_URL,
    CONTAINER_NAME,
    CONTAINER_PORT,
    DEFAULT_NAMESPACE,
    DEFAULT_PREDICTOR_IMAGE,
    DEFAULT_PREDICTOR_TAG,
    DEFAULT_TRACKING_URI,
    GRAPH_ROOT_NODE,
    GRAPH_SERVICE_PORT,
    INFERENCE_GRAPH,
    INFERENCE_SERVICE,
    MODEL_VERSION_ANNOTATION,
    NAME_PATTERN,
    PREDICTOR_COMMAND,
    PREDICTOR_SERVICE_SUFFIX,
    PUBLIC_HOST,
    RESOURCES,
    SERVED_MODEL_NAME,
    VIRTUAL_SERVICE,
    graph_route_name,
    mirror_name,
)

APP_LABEL = "app.kubernetes.io/part-of"
CLUSTER_LOCAL_LABEL = "networking.kserve.io/visibility"
APP_NAME = "wachttijden"
STORAGE_SECRET_ANNOTATION = "serving.kserve.io/secretName"
"""Names the Secret whose credentials KServe mounts into the logger's container: the
kserve-resources chart sets `credentials.storageSecretNameAnnotation` to it (values.yaml,
`kserve.storage.storageSecretNameAnnotation`), and the agent injector then takes that
Secret instead of a service account's (pkg/credentials/service_account_credentials.go,
`CreateSecretVolumeAndEnvFromServiceAccount`)."""


@dataclass(frozen=True)
class Capture:
    """The InferenceService's `logger`: every request and response to the data lake's
    capture container, batched, in the layout `monitoring.capture` reads.

    KServe v0.20's agent (pkg/webhook/admission/pod/agent_injector.go) gets its storage
    credentials from the Secret named by STORAGE_SECRET_ANNOTATION, as environment
    variables (pkg/credentials/azure/azure_secret.go): with `AZURE_CLIENT_ID`,
    `AZURE_CLIENT_SECRET`, `AZURE_TENANT_ID` and `AZURE_STORAGE_ACCESS_KEY` (any value: its
    presence makes the agent use azidentity's DefaultAzureCredential,
    pkg/agent/storage/utils.go) plus `AZURE_ACCOUNT_NAME` or `AZURE_SERVICE_URL`. A
    storage account key alone is not enough: the agent never signs with a shared key."""

    secret_name: str
    batch_size: int = 100
    batch_interval: str = "10s"
    """A partial batch is written at the latest this long after its first record."""

    def logger(self) -> dict[str, Any]:
        """`spec.predictor.logger` (KServe v0.20's LoggerSpec, pkg/apis/serving/v1beta1/inference_service.go)."""
        return {
            "mode": "all",
            "url": CAPTURE_URL,
            "metadataHeaders": [CAPTURE_REQUEST_ID_HEADER],
            "metadataAnnotations": [MODEL_VERSION_ANNOTATION],
            "storage": {"path": CAPTURE_PATH, "parameters": {"format": "json"}},
            "batchSize": int(self.batch_size),
            "batchInterval": self.batch_interval,
        }


@dataclass(frozen=True)
class Resources:
    cpu_request: str = "100m"
    memory_request: str = "512Mi"
    cpu_limit: str = "1"
    memory_limit: str = "1Gi"

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


@dataclass(frozen=True)
class ServingConfig:
    """Everything the manifests need besides the names and the model URI."""

    namespace: str = DEFAULT_NAMESPACE
    image: str = DEFAULT_PREDICTOR_IMAGE
    image_tag: str = DEFAULT_PREDICTOR_TAG
    image_pull_policy: str = "IfNotPresent"
    tracking_uri: str = DEFAULT_TRACKING_URI
    served_model_name: str = SERVED_MODEL_NAME
    resources: Resources = field(default_factory=Resources)
    router_resources: Resources = field(
        default_factory=lambda: Resources("50m", "64Mi", "500m", "256Mi")
    )
    min_replicas: int = 1
    max_replicas: int = 1
    run_as_user: int = 1000
    service_account_name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    """Extra InferenceService annotations, e.g. `serving.kserve.io/deploymentMode`."""
    extra_env: dict[str, str] = field(default_factory=dict)
    gateway: str | None = None
    """`<namespace>/<name>` of the Istio Gateway serving external hosts (mirror routes attach to it)."""
    ingress_domain: str | None = None
    """KServe's ingress domain: external hosts are `<name>-<namespace>.<domain>`."""
    capture: Capture | None = None
    """Capture requests and responses with KServe's logger (None: no logger)."""

    def __post_init__(self) -> None:
        if not self.image or ":" in self.image.rsplit("/", 1)[-1]:
            raise ValueError(f"image must be a repository without a tag, got {self.image!r}")
        if not self.image_tag:
            raise ValueError("image_tag must not be empty")
        if self.min_replicas < 0 or self.max_replicas < max(self.min_replicas, 1):
            raise ValueError("need 0 <= min_replicas <= max_replicas and max_replicas >= 1")

    @property
    def image_ref(self) -> str:
        return f"{self.image}:{self.image_tag}"


def _metadata(name: str, config: ServingConfig, component: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    _check_name(name)
    meta: dict[str, Any] = {
        "name": name,
        "namespace": config.namespace,
        "labels": {APP_LABEL: APP_NAME, "app.kubernetes.io/component": component, **config.labels},
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def _check_name(name: str) -> None:
    import re

    if not re.fullmatch(NAME_PATTERN, name or ""):
        raise ValueError(f"{name!r} is not a valid DNS-1035 label (KServe resource names)")


def predictor_host(isvc_name: str, namespace: str) -> str:
    """The predictor's in-cluster Service host (Standard/raw deployment mode)."""
    return f"{isvc_name}{PREDICTOR_SERVICE_SUFFIX}.{namespace}.svc.cluster.local"


def external_host(name: str, namespace: str, domain: str) -> str:
    """The host KServe gives an InferenceService behind the ingress: its default
    domainTemplate `{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}`."""
    return f"{name}-{namespace}.{domain}"


def inference_service(
    name: str, model_uri: str, config: ServingConfig | None = None, *, cluster_local: bool = False
) -> dict[str, Any]:
    """An InferenceService with our predictor as custom container.

    `cluster_local`: KServe creates no Ingress (label `networking.kserve.io/visibility`),
    for a primary whose external host a mirror VirtualService serves instead.
    """
    config = config or ServingConfig()
    if cluster_local:
        config = replace(config, labels={**config.labels, CLUSTER_LOCAL_LABEL: "cluster-local"})
    if not model_uri.startswith("models:/"):
        raise ValueError(f"model_uri must be a registry URI models:/..., got {model_uri!r}")
    model = config.served_model_name
    env = [
        {"name": "MLFLOW_TRACKING_URI", "value": config.tracking_uri},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        *({"name": k, "value": v} for k, v in sorted(config.extra_env.items())),
    ]
    container = {
        "name": CONTAINER_NAME,
        "image": config.image_ref,
        "imagePullPolicy": config.image_pull_policy,
        "command": list(PREDICTOR_COMMAND),
        "args": [
            "--model_name", model,
            "--model-uri", model_uri,
            "--http_port", str(CONTAINER_PORT), "--host", PUBLIC_HOST,
        ],
        "env": env,
        "ports": [{"containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "resources": config.resources.to_dict(),
        "readinessProbe": {
            "httpGet": {"path": f"/v2/models/{model}/ready", "port": CONTAINER_PORT},
            "initialDelaySeconds": 5,
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": CONTAINER_PORT},
            "initialDelaySeconds": 30,
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "startupProbe": {
            "httpGet": {"path": f"/v2/models/{model}/ready", "port": CONTAINER_PORT},
            "periodSeconds": 5,
            "failureThreshold": 60,
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": config.run_as_user,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    predictor: dict[str, Any] = {
        "minReplicas": config.min_replicas,
        "maxReplicas": config.max_replicas,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": config.run_as_user,
            "runAsGroup": config.run_as_user,
            "fsGroup": config.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
    }
    if config.service_account_name:
        predictor["serviceAccountName"] = config.service_account_name
    annotations = dict(config.annotations)
    version = model_uri.rsplit("/", 1)[-1]
    if version.isdigit():
        annotations[MODEL_VERSION_ANNOTATION] = version
    if config.capture is not None:
        predictor["logger"] = config.capture.logger()
        annotations[STORAGE_SECRET_ANNOTATION] = config.capture.secret_name
    return {
        "apiVersion": RESOURCES[INFERENCE_SERVICE].api_version,
        "kind": INFERENCE_SERVICE,
        "metadata": _metadata(name, config, "predictor", annotations),
        "spec": {"predictor": predictor},
    }


def inference_graph(
    name: str,
    primary: str,
    shadow: str,
    config: ServingConfig | None = None,
    *,
    service_timeout_seconds: int | None = 30,
) -> dict[str, Any]:
    """InferenceGraph: Sequence [shadow (Soft, $request), primary (Hard, $request)].

    The last step's body and status are returned, so clients get the primary's answer.
    """
    config = config or ServingConfig()
    _check_name(primary)
    _check_name(shadow)
    if primary == shadow:
        raise ValueError("primary and shadow must be different InferenceServices")
    spec: dict[str, Any] = {
        "nodes": {
            GRAPH_ROOT_NODE: {
                "routerType": "Sequence",
                "steps": [
                    {"name": "shadow", "serviceName": shadow, "data": "$request", "dependency": "Soft"},
                    {"name": "primary", "serviceName": primary, "data": "$request", "dependency": "Hard"},
                ],
            }
        },
        "resources": config.router_resources.to_dict(),
    }
    if service_timeout_seconds:
        spec["routerTimeouts"] = {"serviceClient": int(service_timeout_seconds)}
    return {
        "apiVersion": RESOURCES[INFERENCE_GRAPH].api_version,
        "kind": INFERENCE_GRAPH,
        "metadata": _metadata(name, config, "graph"),
        "spec": spec,
    }


def graph_host(graph: str, namespace: str) -> str:
    """The graph router's in-cluster Service host (KServe names the Service after the graph)."""
    return f"{graph}.{namespace}.svc.cluster.local"


def graph_ingress_route(graph: str, config: ServingConfig) -> dict[str, Any]:
    """VirtualService serving an InferenceGraph's external host on `config.gateway`.

    In Standard mode KServe creates a Deployment and a Service for a graph's router and no
    Ingress (KServe v0.20 pkg/controller/v1alpha1/inferencegraph/raw_ig.go), yet sets its
    `status.url` to the external host `<graph>-<namespace>.<domain>` (the raw reconciler's
    createRawURL, the InferenceServices' domain template). This route makes that host
    answer through the gateway; in-cluster callers use the Service directly.
    """
    _check_name(graph)
    if not config.gateway or not config.ingress_domain:
        raise ValueError("a graph's external route needs config.gateway and config.ingress_domain")
    return {
        "apiVersion": RESOURCES[VIRTUAL_SERVICE].api_version,
        "kind": VIRTUAL_SERVICE,
        "metadata": _metadata(graph_route_name(graph), config, "graph-ingress"),
        "spec": {
            "hosts": [external_host(graph, config.namespace, config.ingress_domain)],
            "gateways": [config.gateway],
            "http": [{
                "route": [{"destination": {"host": graph_host(graph, config.namespace),
                                           "port": {"number": GRAPH_SERVICE_PORT}}}],
            }],
        },
    }


def virtual_service_mirror(
    primary: str,
    shadow: str,
    config: ServingConfig | None = None,
    *,
    percentage: float = 100.0,
    name: str | None = None,
    port: int = 80,
) -> dict[str, Any]:
    """Istio VirtualService on the primary predictor's host that mirrors to the shadow.

    In the mesh (sidecars of in-cluster callers) it applies to the predictor's Service
    host, listed first. A VirtualService without `gateways` binds to the mesh only, so
    with `config.gateway` it is bound to that gateway as well and also answers the
    primary's external host there.
    """
    config = config or ServingConfig()
    _check_name(primary)
    _check_name(shadow)
    if not 0.0 <= percentage <= 100.0:
        raise ValueError(f"percentage must be within [0, 100], got {percentage}")
    primary_host = predictor_host(primary, config.namespace)
    shadow_host = predictor_host(shadow, config.namespace)
    hosts, gateways = [primary_host], []
    if config.gateway:
        if not config.ingress_domain:
            raise ValueError("a mirror on a gateway needs config.ingress_domain for the external host")
        hosts.append(external_host(primary, config.namespace, config.ingress_domain))
        gateways = ["mesh", config.gateway]
    return {
        "apiVersion": RESOURCES[VIRTUAL_SERVICE].api_version,
        "kind": VIRTUAL_SERVICE,
        "metadata": _metadata(name or mirror_name(primary), config, "mirror"),
        "spec": {
            "hosts": hosts,
            **({"gateways": gateways} if gateways else {}),
            "http": [
                {
                    "route": [{"destination": {"host": primary_host, "port": {"number": port}}}],
                    "mirror": {"host": shadow_host, "port": {"number": port}},
                    "mirrorPercentage": {"value": float(percentage)},
                }
            ],
        },
    }
