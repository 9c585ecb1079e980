"""Deploy targets: where the manifests from `serving.manifests` are applied.

`target_from_env()` picks one by `MLOPS_DEPLOY_TARGET`: `kubernetes` (server-side apply,
`targets.kubernetes`) or `local` (default: the local serving controller, `targets.local`).
Both implement `DeployTarget`. Light on purpose: heavy imports happen inside methods, so
DAG tasks may import this package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from airflow_project.serving.constants import (
    DEFAULT_NAMESPACE,
    DEFAULT_PREDICTOR_IMAGE,
    DEFAULT_PREDICTOR_TAG,
    DEFAULT_TRACKING_URI,
    RESOURCES,
    ResourceType,
)
from airflow_project.settings import Ports, home_from_env

DEFAULT_TIMEOUT_S = 600.0

TARGET_ENV = "MLOPS_DEPLOY_TARGET"
NAMESPACE_ENV = "MLOPS_SERVING_NAMESPACE"
IMAGE_ENV = "MLOPS_PREDICTOR_IMAGE"
GATEWAY_ENV = "MLOPS_SERVING_GATEWAY"
INGRESS_DOMAIN_ENV = "MLOPS_INGRESS_DOMAIN"
CAPTURE_SECRET_ENV = "MLOPS_CAPTURE_SECRET"
"""Kubernetes: the Secret with the capture logger's storage credentials (manifests.Capture);
unset, InferenceServices get no logger (the agent refuses to start without that Secret)."""


class DeployError(RuntimeError):
    """A manifest could not be applied or its workload failed to start."""


class DeployTimeout(DeployError, TimeoutError):
    """An object did not become ready in time; the message lists its conditions."""


def resource_type(kind: str) -> ResourceType:
    try:
        return RESOURCES[kind]
    except KeyError:
        raise ValueError(f"unsupported kind {kind!r}; supported: {sorted(RESOURCES)}") from None


@runtime_checkable
class DeployTarget(Protocol):
    """`apply` creates or updates an object (idempotent); `wait_ready` blocks until it serves
    and returns its base URL (`DeployTimeout` names its conditions otherwise); `delete`
    removes it (no error when absent); `url` is its base URL or None."""

    name: str
    namespace: str

    def apply(self, manifest: Mapping[str, Any]) -> None: ...

    def wait_ready(self, kind: str, name: str, timeout: float = DEFAULT_TIMEOUT_S) -> str: ...

    def delete(self, kind: str, name: str) -> None: ...

    def url(self, kind: str, name: str) -> str | None: ...


def manifest_identity(manifest: Mapping[str, Any], namespace: str) -> tuple[str, str]:
    kind = manifest.get("kind", "")
    rtype = resource_type(kind)
    if manifest.get("apiVersion") != rtype.api_version:
        raise ValueError(f"{kind} must have apiVersion {rtype.api_version}, got {manifest.get('apiVersion')!r}")
    meta = manifest.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise ValueError(f"{kind} manifest has no metadata.name")
    ns = meta.get("namespace")
    if ns and ns != namespace:
        raise ValueError(
            f"{kind} {name} is for namespace {ns!r} but this target deploys to {namespace!r}"
        )
    return kind, name


def default_namespace() -> str:
    return os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE


def target_kind() -> str:
    kind = (os.environ.get(TARGET_ENV) or "local").strip().lower()
    if kind not in ("local", "kubernetes"):
        raise ValueError(f"{TARGET_ENV} must be 'local' or 'kubernetes', got {kind!r}")
    return kind


def target_from_env(namespace: str | None = None) -> DeployTarget:
    """`MLOPS_DEPLOY_TARGET` (default local); namespace default `MLOPS_SERVING_NAMESPACE`."""
    namespace = namespace or default_namespace()
    if target_kind() == "kubernetes":
        from airflow_project.serving.targets.kubernetes import KubernetesTarget

        return KubernetesTarget(namespace)
    from airflow_project.serving.targets.local import LocalTarget, capture_enabled

    return LocalTarget(namespace, home=home_from_env(), base_port=Ports.from_env().serving,
                       capture=capture_enabled())


def serving_config_from_env(namespace: str | None = None) -> Any:
    """`ServingConfig` for the target: namespace, predictor image (`MLOPS_PREDICTOR_IMAGE`,
    `repo:tag`), tracking URI (`MLFLOW_TRACKING_URI`), the Istio gateway and ingress domain
    for external hosts (`MLOPS_SERVING_GATEWAY`, `MLOPS_INGRESS_DOMAIN`; the chart sets them),
    the capture logger's credentials Secret (`MLOPS_CAPTURE_SECRET`)."""
    from airflow_project.serving.manifests import Capture, ServingConfig

    image, tag = DEFAULT_PREDICTOR_IMAGE, DEFAULT_PREDICTOR_TAG
    ref = os.environ.get(IMAGE_ENV, "").strip()
    if ref:
        repo, _, maybe_tag = ref.rpartition(":")
        if repo and "/" not in maybe_tag:
            image, tag = repo, maybe_tag
        else:
            image = ref
    return ServingConfig(
        namespace=namespace or default_namespace(),
        image=image,
        image_tag=tag,
        tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI,
        gateway=os.environ.get(GATEWAY_ENV) or None,
        ingress_domain=os.environ.get(INGRESS_DOMAIN_ENV) or None,
        capture=Capture(secret) if (secret := os.environ.get(CAPTURE_SECRET_ENV, "").strip()) else None,
    )


