"""Shared helpers of the chart tests (imported by module name: tests/ has no packages)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from airflow_project.release import chart, plan, project

ROOT = project.repo_root()
HELM_DIR = ROOT / "helm"
VALUES = HELM_DIR / "values.yaml"
VALUES_KIND = HELM_DIR / "values-kind.yaml"
SITE_VALUES = ROOT / "tests" / "chart" / "values-site.yaml"
RELEASE = "mlops"
NAMESPACE = "mlops"
PLAN_TAG = "9.8.7-test"
PLAN_VALUES = {"production": (str(SITE_VALUES.relative_to(ROOT)),), "kind": ()}
ENVS = ["production", "kind"]
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
# ECK custom resources the operator turns into workloads, with their main container.
ECK_MAIN_CONTAINER = {
    "Elasticsearch": "elasticsearch",
    "Kibana": "kibana",
    "Logstash": "logstash",
    "Beat": None,  # the Beat's type: filebeat
}


@lru_cache
def values(kind: bool = False) -> dict:
    from airflow_project.release.placeholders import merge

    base = yaml.safe_load(VALUES.read_text())
    extra = VALUES_KIND if kind else SITE_VALUES
    return merge(base, yaml.safe_load(extra.read_text()))


def own(objs: list[dict]) -> list[dict]:
    """Objects of the chart's own templates (label part-of=airflow-project)."""
    return [
        o
        for o in objs
        if (o.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/part-of")
        == "airflow-project"
    ]


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o.get("kind") == kind]


def named(objs: list[dict], kind: str, name: str) -> dict:
    (obj,) = [o for o in by_kind(objs, kind) if o["metadata"]["name"] == name]
    return obj


def ident(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def release_info(objs: list[dict]) -> dict:
    return named(objs, "ConfigMap", f"{RELEASE}-release-info")["data"]


def workloads(objs: list[dict]) -> list[dict]:
    """What becomes pods: workload kinds and the ECK resources the operator runs."""
    return [o for o in objs if o["kind"] in WORKLOAD_KINDS or o["kind"] in ECK_MAIN_CONTAINER]


def pod_specs(obj: dict) -> Iterator[tuple[str, dict, str | None]]:
    """(where, pod spec, main container name or None) of everything the object runs,
    including the KubernetesExecutor pod template inside the Airflow config ConfigMap."""
    kind, spec = obj["kind"], obj.get("spec") or {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        yield "template", spec["template"]["spec"], None
    elif kind == "CronJob":
        yield "template", spec["jobTemplate"]["spec"]["template"]["spec"], None
    elif kind == "Elasticsearch":
        for node_set in spec.get("nodeSets") or []:
            pod = (node_set.get("podTemplate") or {}).get("spec") or {}
            yield f"nodeSet {node_set['name']}", pod, "elasticsearch"
    elif kind in ("Kibana", "Logstash"):
        yield "podTemplate", (spec.get("podTemplate") or {}).get("spec") or {}, kind.lower()
    elif kind == "Beat":
        for mode in ("daemonSet", "deployment"):
            if mode in spec:
                pod = ((spec[mode] or {}).get("podTemplate") or {}).get("spec") or {}
                yield mode, pod, spec["type"]
    elif kind == "ConfigMap":
        for key, text in (obj.get("data") or {}).items():
            if key == "pod_template_file.yaml":
                yield key, yaml.safe_load(text)["spec"], None


def pod_template(objs: list[dict]) -> dict:
    """The KubernetesExecutor's pod_template_file.yaml (Airflow chart ConfigMap)."""
    (text,) = [
        o["data"]["pod_template_file.yaml"]
        for o in by_kind(objs, "ConfigMap")
        if "pod_template_file.yaml" in (o.get("data") or {})
    ]
    return yaml.safe_load(text)


def containers(pod: dict) -> list[dict]:
    return list(pod.get("containers") or []) + list(pod.get("initContainers") or [])


# ---------------------------------------------------------------- services and URLs
@dataclass(frozen=True)
class ServiceRef:
    name: str
    namespace: str
    ports: tuple[int, ...]
    selector: tuple[tuple[str, str], ...]
    source: str  # "rendered" or how it was derived


def _eck_services(obj: dict, namespace: str) -> Iterator[ServiceRef]:
    """Services the ECK operator creates for a rendered resource (cloud-on-k8s v3.5.0:
    pkg/apis/elasticsearch/v1/name.go HTTPService, pkg/apis/logstash/v1alpha1/name.go
    UserServiceName, pkg/apis/kibana/v1/name.go)."""
    name, kind = obj["metadata"]["name"], obj["kind"]
    if kind == "Elasticsearch":
        yield ServiceRef(f"{name}-es-http", namespace, (9200,), (), "ECK Elasticsearch")
    elif kind == "Kibana":
        yield ServiceRef(f"{name}-kb-http", namespace, (5601,), (), "ECK Kibana")
    elif kind == "Logstash":
        for svc in obj["spec"].get("services") or []:
            ports = tuple(p["port"] for p in svc["service"]["spec"]["ports"])
            yield ServiceRef(f"{name}-ls-{svc['name']}", namespace, ports, (), "ECK Logstash")


def services(objs: list[dict], namespace: str = NAMESPACE) -> dict[tuple[str, str], ServiceRef]:
    out = {}
    for o in objs:
        ns = o["metadata"].get("namespace") or namespace
        if o["kind"] == "Service":
            ports = tuple(p["port"] for p in o["spec"].get("ports") or [])
            selector = tuple(sorted((o["spec"].get("selector") or {}).items()))
            out[(o["metadata"]["name"], ns)] = ServiceRef(
                o["metadata"]["name"], ns, ports, selector, "rendered"
            )
        for ref in _eck_services(o, ns):
            out[(ref.name, ref.namespace)] = ref
    return out


_HOST = re.compile(r"^(?P<name>[a-z0-9-]+)(?:\.(?P<ns>[a-z0-9-]+)(?:\.svc(?:\.cluster\.local)?)?)?$")


def resolve(url: str, objs: list[dict], caller_namespace: str = NAMESPACE) -> ServiceRef:
    """The Service (and port) an in-cluster URL or host:port reaches; AssertionError naming
    what exists when there is none."""
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = parts.port or default
    m = _HOST.match(parts.hostname or "")
    assert m, f"{url}: not an in-cluster service host"
    key = (m["name"], m["ns"] or caller_namespace)
    known = services(objs)
    assert key in known, f"{url}: no Service {key[1]}/{key[0]}; rendered: {sorted(known)}"
    svc = known[key]
    assert port in svc.ports, f"{url}: Service {key[1]}/{key[0]} has ports {svc.ports}, not {port}"
    return svc


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def config_json(objs: list[dict], configmap: str, key: str) -> dict:
    return json.loads(named(objs, "ConfigMap", configmap)["data"][key])


def mesh_config(objs: list[dict]) -> dict:
    return yaml.safe_load(named(objs, "ConfigMap", "istio")["data"]["mesh"])


def airflow_env(objs: list[dict]) -> dict[str, str]:
    return named(objs, "ConfigMap", f"{RELEASE}-airflow-env")["data"]


def worker_serving_config(objs: list[dict]):
    """The `ServingConfig` an Airflow worker builds its manifests with, given the chart's
    environment ConfigMap (`targets.serving_config_from_env`)."""
    import os
    from unittest import mock

    from airflow_project.serving import targets

    with mock.patch.dict(os.environ, airflow_env(objs)):
        return targets.serving_config_from_env()


# ---------------------------------------------------------------- a fresh clone
def fresh_copy(target: Path) -> Path:
    """The repository's files as a fresh clone has them (tracked and new, not ignored: no
    .venv, node_modules, .tools or helm/charts), copied from the work tree so that changes
    not yet committed are what is tested."""
    import shutil
    import subprocess

    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, listed):
        source = ROOT / rel
        if source.is_file():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / rel)
    subprocess.run(["git", "init", "-q", str(target)], check=True)
    return target


# ---------------------------------------------------------------- the plan, rendered
def plan_config(env: str, helm: str) -> plan.DeployConfig:
    return plan.DeployConfig(
        env=env,
        release=RELEASE,
        namespace=NAMESPACE,
        tag=PLAN_TAG,
        helm=helm,
        values=PLAN_VALUES[env],
    )


class PlanRenders:
    """Every helm step of the real plan, rendered once."""

    def __init__(self, helm: str, rc: chart.RenderableChart):
        self.helm = helm
        self.rc = rc
        self._cache: dict[tuple[str, str], list[dict]] = {}

    def steps(self, env: str) -> list[plan.Step]:
        return [s for s in plan.build(plan_config(env, self.helm)) if "upgrade" in s.argv[1:2]]

    def __call__(self, env: str, stage: str = "airflow") -> list[dict]:
        key = (env, stage)
        if key not in self._cache:
            (step,) = [s for s in self.steps(env) if s.name == stage]
            argv = chart.template_argv(step.argv, self.rc.path, ROOT, self.helm)
            self._cache[key] = chart.run_template(argv)
        return self._cache[key]




# ---------------------------------------------------------------- MLflow's clients
def mlflow_tracking_uris(objs: list[dict], serving_config=None) -> dict[str, list[str]]:
    """Every MLFLOW_TRACKING_URI an in-cluster client of the render uses -> where it is set:
    literal env values of every container the render runs (the task pod template included),
    the Airflow environment ConfigMap (envFrom of every Airflow pod) and the predictor that an
    Airflow worker builds with `serving_config` (its InferenceService env)."""
    found: dict[str, list[str]] = {}
    for obj in workloads(objs) + by_kind(objs, "ConfigMap"):
        for where, pod, _ in pod_specs(obj):
            for c in containers(pod):
                for e in c.get("env") or []:
                    if e["name"] == "MLFLOW_TRACKING_URI" and e.get("value"):
                        found.setdefault(e["value"], []).append(f"{ident(obj)} {where} {c['name']}")
    env_cm = [o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"] == f"{RELEASE}-airflow-env"]
    for cm in env_cm:
        found.setdefault(cm["data"]["MLFLOW_TRACKING_URI"], []).append(ident(cm))
    if serving_config is not None:
        from airflow_project.serving import manifests

        isvc = manifests.inference_service("wachttijden", "models:/wachttijden/1", serving_config)
        (predictor,) = isvc["spec"]["predictor"]["containers"]
        uri = {e["name"]: e.get("value") for e in predictor["env"]}["MLFLOW_TRACKING_URI"]
        found.setdefault(uri, []).append("InferenceService predictor (serving/manifests.py)")
    return found


def host_headers(uri: str) -> list[str]:
    """The Host headers HTTP clients send for `uri`: `host:port` as written, and the bare host
    when the port is the scheme's default (RFC 9110 7.2: clients may omit it; requests and
    httpx do)."""
    parts = urlsplit(uri)
    default = {"http": 80, "https": 443}[parts.scheme]
    headers = [parts.netloc] if parts.port else []
    if parts.port in (None, default):
        headers.append(parts.hostname or "")
    return headers


def e2e_module(name: str):
    """A module of the kind suite (tests/e2e/<name>.py: `kube` has its pins, kind release and
    node image; `evidence` its log readers), loaded by path: tests/ folders are not packages."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"e2e_{name}", ROOT / "tests" / "e2e" / f"{name}.py")
    module = sys.modules.get(spec.name)
    if module is None:
        module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # registered first: its dataclasses look it up
    return module


# ---------------------------------------------------------------- the Logstash pipeline
A_DAY = "2026.12.03"


def logstash_config(objs: list[dict]) -> str:
    pipelines = yaml.safe_load(named(objs, "Secret", "logstash-pipelines")["stringData"]["pipelines.yml"])
    (pipeline,) = pipelines
    return pipeline["config.string"]


def logstash_indices(config: str) -> dict[str, str]:
    """Which lines go where: the branch's condition -> the (dated) index it writes."""
    out = {}
    for condition, index in re.findall(r'if (\[[^{]+?) \{\s*mutate \{ add_field => \{ "\[@metadata\]\[index\]" => "([^"]+)" \} \}', config):
        out[condition.strip()] = index.replace("%{+YYYY.MM.dd}", A_DAY)
    assert 'index => "%{[@metadata][index]}"' in config, "the output writes the index its branch chose"
    return out
