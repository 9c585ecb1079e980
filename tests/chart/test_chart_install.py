"""Install-time invariants, asserted on every stage of the real plan rendered with the real
subcharts (the `helm upgrade --install` steps `make deploy` runs, as `helm template`)."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
import yaml
from chart_helpers import (
    ENVS,
    NAMESPACE,
    PLAN_TAG,
    RELEASE,
    ROOT,
    airflow_env,
    by_kind,
    config_json,
    containers,
    e2e_module,
    host_headers,
    ident,
    logstash_config,
    logstash_indices,
    matches,
    mesh_config,
    mlflow_tracking_uris,
    named,
    pod_specs,
    pod_template,
    release_info,
    resolve,
    services,
    values,
    worker_serving_config,
    workloads,
)
from crd_schema import CRDs

from airflow_project.release import chart, devsecrets, placeholders
from airflow_project.serving import manifests
from airflow_project.serving.constants import PREDICTOR_SERVICE_SUFFIX

pytestmark = [pytest.mark.chart, pytest.mark.usefixtures("real_subcharts")]

STAGES = chart.STAGE_TAGS
SERVING = values()["mlops"]["serving"]["namespace"]
# The namespaces the plan creates: the release's (--create-namespace) and the serving one.
CREATED = {NAMESPACE, SERVING}


# ---------------------------------------------------------------- every stage renders
@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("env", ENVS)
def test_every_stage_of_the_plan_renders(plan_render, env, stage):
    objs = plan_render(env, stage)  # a render error fails here with helm's message
    assert {o["kind"] for o in objs} >= {"ConfigMap"}
    assert release_stages(objs) == list(STAGES[: STAGES.index(stage) + 1])


def release_stages(objs: list[dict]) -> list[str]:
    return release_info(objs)["stages"].split(",")


# ---------------------------------------------------------------- what each stage adds
def readme_stages() -> dict[str, tuple[set[str], set[str]]]:
    """README's staged-install table: stage -> (production workloads, kind workloads); a
    workload marked "(production only)" is not in kind's, "kind adds" lists kind's own."""
    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- stages:begin -->")[1].split("<!-- stages:end -->")[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or cells[1] not in STAGES:
            continue
        added = cells[3]
        production, _, kind_only = added.partition("kind adds")
        token = re.compile(r"`([A-Za-z]+/[a-z0-9-]+)`( \(production only\))?")
        found = token.findall(production)
        shared = {name for name, only in found if not only}
        rows[cells[1]] = ({name for name, _ in found}, shared | {name for name, _ in token.findall(kind_only)})
    return rows


def test_readme_lists_every_stage():
    assert list(readme_stages()) == list(STAGES)


@pytest.mark.parametrize("env", ENVS)
def test_each_stage_adds_only_the_workloads_its_readme_row_names(plan_render, env):
    table = readme_stages()
    before: set[str] = set()
    for stage in STAGES:
        now = {ident(o) for o in workloads(plan_render(env, stage))}
        production, kind = table[stage]
        expected = kind if env == "kind" else production
        assert now - before == expected, stage
        assert before <= now, f"{stage} drops {before - now}"
        before = now


@pytest.mark.parametrize("env", ENVS)
def test_stage_one_renders_crds_and_no_workload(plan_render, env):
    first = plan_render(env, "crds")
    assert not workloads(first)
    crds = {o["metadata"]["name"] for o in by_kind(first, "CustomResourceDefinition")}
    final = {o["metadata"]["name"] for o in by_kind(plan_render(env), "CustomResourceDefinition")}
    # cert-manager has no CRD-only chart: its CRDs come with its controller (stage 2)
    assert final - crds == {n for n in final if n.endswith(".cert-manager.io")}
    for group in ("serving.kserve.io", "networking.istio.io", "elasticsearch.k8s.elastic.co"):
        assert any(n.endswith(group) for n in crds), group


@pytest.mark.parametrize("env", ENVS)
def test_cert_manager_follows_the_stage_tags(plan_render, env):
    """Its own `enabled: true` must not pull it into the CRD stage."""
    first = {ident(o) for o in plan_render(env, "crds")}
    assert not [i for i in first if "cert-manager" in i]
    assert "Deployment/mlops-cert-manager" in {ident(o) for o in plan_render(env, "controllers")}


# ---------------------------------------------------------------- namespaces
def _namespace_refs(obj: dict):
    """(where, namespace) of every namespace an object names or points at."""
    kind, meta = obj["kind"], obj["metadata"]
    if meta.get("namespace"):
        yield "metadata.namespace", meta["namespace"]
    for i, subject in enumerate(obj.get("subjects") or []):
        if subject.get("namespace"):
            yield f"subjects[{i}]", subject["namespace"]
    for i, hook in enumerate(obj.get("webhooks") or []):
        service = (hook.get("clientConfig") or {}).get("service")
        if service:
            yield f"webhooks[{i}].clientConfig.service", service["namespace"]
    if kind == "CustomResourceDefinition":
        service = (((obj["spec"].get("conversion") or {}).get("webhook") or {}).get("clientConfig") or {}).get("service")
        if service:
            yield "spec.conversion.webhook", service["namespace"]
        return  # descriptions mention example namespaces
    if kind == "ConfigMap" and meta["name"] == "istio":
        mesh = yaml.safe_load(obj["data"]["mesh"])
        yield "mesh.rootNamespace", mesh.get("rootNamespace", "istio-system")
        yield from (("mesh", ns) for ns in _svc_namespaces(yaml.safe_dump(mesh)))
    if kind == "ConfigMap" and meta["name"] == "inferenceservice-config":
        ingress = yaml.safe_load(obj["data"]["ingress"])
        for key in ("ingressGateway", "localGateway", "kserveIngressGateway"):
            if ingress.get(key):
                yield f"inferenceservice-config ingress.{key}", ingress[key].split("/")[0]
    for path, text in placeholders.strings(obj):
        if path.endswith("_example"):  # KServe's commented sample configuration
            continue
        for ns in _svc_namespaces(text):
            yield path, ns
        for ns in re.findall(r"--[a-z-]*namespace=([a-z0-9-]+)", text):
            yield path, ns
        if "istio-system" in text or "kube-system" in text:
            yield path, "istio-system" if "istio-system" in text else "kube-system"


def _svc_namespaces(text: str) -> list[str]:
    return re.findall(r"\b[a-z0-9-]+\.([a-z0-9-]+)\.svc\b", text)


@pytest.mark.parametrize("env", ENVS)
def test_nothing_refers_to_a_namespace_the_plan_does_not_create(plan_render, env):
    outside = [
        f"{ident(o)} {where}: {ns}"
        for o in plan_render(env)
        for where, ns in _namespace_refs(o)
        if ns not in CREATED
    ]
    assert not outside, "\n".join(outside)


@pytest.mark.parametrize("env", ENVS)
def test_webhooks_call_rendered_services(plan_render, env):
    objs = plan_render(env)
    for hook_config in by_kind(objs, "MutatingWebhookConfiguration") + by_kind(
        objs, "ValidatingWebhookConfiguration"
    ):
        for hook in hook_config["webhooks"]:
            svc = hook["clientConfig"].get("service")
            if svc:
                port = svc.get("port", 443)
                resolve(f"https://{svc['name']}.{svc['namespace']}.svc:{port}", objs)


# ---------------------------------------------------------------- URLs reach a Service port
@pytest.mark.parametrize("env", ENVS)
def test_mlflow_uri_of_airflow_and_predictors_reaches_the_mlflow_server(plan_render, env):
    objs = plan_render(env)
    env_vars = airflow_env(objs)
    svc = resolve(env_vars["MLFLOW_TRACKING_URI"], objs)
    service = named(objs, "Service", svc.name)
    (server,) = [
        d for d in by_kind(objs, "Deployment")
        if matches(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
    ]
    (container,) = server["spec"]["template"]["spec"]["containers"]
    target = next(p["targetPort"] for p in service["spec"]["ports"] if p["port"] == svc.ports[0])
    (port,) = [p["containerPort"] for p in container["ports"] if target in (p["name"], p["containerPort"])]
    # the server listens there, and the same URL is the artifact proxy (--serve-artifacts)
    assert f"--port={port}" in container["args"] and "--serve-artifacts" in container["args"]
    # predictors get the tracking URI of the Airflow worker that builds their manifest
    config = worker_serving_config(objs)
    isvc = manifests.inference_service("wachttijden", "models:/wachttijden/1", config)
    (predictor,) = isvc["spec"]["predictor"]["containers"]
    predictor_uri = {e["name"]: e.get("value") for e in predictor["env"]}["MLFLOW_TRACKING_URI"]
    assert resolve(predictor_uri, objs) == svc


@pytest.mark.parametrize("env", ENVS)
def test_logging_urls_reach_their_services(plan_render, env):
    objs = plan_render(env)
    (beat,) = by_kind(objs, "Beat")
    for host in beat["spec"]["config"]["output.logstash"]["hosts"]:
        resolve(host, objs)
    es_name = values()["mlops"]["logging"]["elasticsearchName"]
    tls = env == "production"
    resolve(devsecrets.elasticsearch_url(NAMESPACE, es_name, "u", "p", tls=tls), objs)
    for kb in by_kind(objs, "Kibana"):
        named(objs, "Elasticsearch", kb["spec"]["elasticsearchRef"]["name"])
    for ls in by_kind(objs, "Logstash"):
        for ref in ls["spec"]["elasticsearchRefs"]:
            named(objs, "Elasticsearch", ref["name"])


def test_kind_development_services_are_reachable(plan_render):
    objs = plan_render("kind")
    dev = devsecrets.dev_values(NAMESPACE)
    conn = dev["azure-storage"]["AZURE_STORAGE_CONNECTION_STRING"]
    resolve(re.search(r"BlobEndpoint=([^;]+)", conn).group(1), objs)
    resolve(dev["airflow-metadata"]["connection"].replace("postgresql://", "tcp://"), objs)
    host = values(True)["mlflow"]["backendStore"]["postgres"]["host"]
    resolve(f"{host}:{values(True)['mlflow']['backendStore']['postgres']['port']}", objs)


# ---------------------------------------------------------------- ingress and mirroring
def _gateway_pods(objs: list[dict]) -> list[dict]:
    mesh = mesh_config(objs)
    selector = {"istio": mesh["ingressSelector"]}
    return [
        d for d in by_kind(objs, "Deployment")
        if matches(selector, d["spec"]["template"]["metadata"]["labels"])
    ]


@pytest.mark.parametrize("env", ENVS)
def test_kserve_ingresses_are_served_by_the_projects_gateway(plan_render, env):
    objs = plan_render(env)
    ingress = config_json(objs, "inferenceservice-config", "ingress")
    assert config_json(objs, "inferenceservice-config", "deploy")["defaultDeploymentMode"] == "Standard"
    # The Ingress KServe's raw reconciler creates (kube_ingress_reconciler.go): class from
    # the config, host from the domain template.
    host = (
        ingress["domainTemplate"]
        .replace("{{ .Name }}", "wachttijden")
        .replace("{{ .Namespace }}", SERVING)
        .replace("{{ .IngressDomain }}", ingress["ingressDomain"])
    )
    assert host == manifests.external_host("wachttijden", SERVING, ingress["ingressDomain"])
    (ingress_class,) = [
        c for c in by_kind(objs, "IngressClass") if c["metadata"]["name"] == ingress["ingressClassName"]
    ]
    assert ingress_class["spec"]["controller"] == "istio.io/ingress-controller"
    mesh = mesh_config(objs)
    assert mesh["ingressControllerMode"] == "STRICT" and mesh["ingressClass"] == ingress["ingressClassName"]
    # Istio serves it on pods labelled istio=<ingressSelector>: the project's gateway
    (gateway,) = _gateway_pods(objs)
    assert gateway["metadata"]["namespace"] == NAMESPACE
    ingress_service = named(objs, "Service", mesh["ingressService"])
    assert matches(ingress_service["spec"]["selector"], gateway["spec"]["template"]["metadata"]["labels"])
    # and the serving namespace's NetworkPolicies let exactly those pods in
    selector = values(env == "kind")["mlops"]["serving"]["gateway"]["selector"]
    assert matches(selector, gateway["spec"]["template"]["metadata"]["labels"])
    assert ingress["ingressDomain"] == airflow_env(objs)["MLOPS_INGRESS_DOMAIN"]


@pytest.mark.parametrize("env", ENVS)
def test_mirror_route_covers_external_and_mesh_traffic(plan_render, env):
    objs = plan_render(env)
    config = worker_serving_config(objs)
    vs = manifests.virtual_service_mirror("wachttijden-primary", "wachttijden-shadow", config)
    spec = vs["spec"]
    assert "mesh" in spec["gateways"]
    (ref,) = [g for g in spec["gateways"] if g != "mesh"]
    ns, name = ref.split("/")
    gateway = named([o for o in objs if o["metadata"].get("namespace") == ns], "Gateway", name)
    (pods,) = _gateway_pods(objs)
    assert matches(gateway["spec"]["selector"], pods["spec"]["template"]["metadata"]["labels"])
    ingress = config_json(objs, "inferenceservice-config", "ingress")
    external = manifests.external_host("wachttijden-primary", SERVING, ingress["ingressDomain"])
    internal = f"wachttijden-primary{PREDICTOR_SERVICE_SUFFIX}.{SERVING}.svc.cluster.local"
    assert spec["hosts"] == [internal, external]
    server_hosts = [h for s in gateway["spec"]["servers"] for h in s["hosts"]]
    assert any(h == "*" or h == external or (h.startswith("*.") and external.endswith(h[1:])) for h in server_hosts)
    # the primary leaves its external host to the mirror: KServe creates no Ingress for it
    isvc = manifests.inference_service("wachttijden-primary", "models:/wachttijden/1", config, cluster_local=True)
    assert isvc["metadata"]["labels"]["networking.kserve.io/visibility"] == "cluster-local"


@pytest.mark.parametrize("env", ENVS)
def test_the_graphs_status_url_is_routed_by_the_projects_gateway(plan_render, env):
    """KServe's Standard mode creates no Ingress for an InferenceGraph (v0.20
    pkg/controller/v1alpha1/inferencegraph/raw_ig.go) but sets status.url to the host its
    domain template gives (raw reconciler createRawURL): the deploy DAG's route serves it."""
    from airflow_project.serving.constants import GRAPH_NAME

    objs = plan_render(env)
    config = worker_serving_config(objs)
    route = manifests.graph_ingress_route(GRAPH_NAME, config)
    ingress = config_json(objs, "inferenceservice-config", "ingress")
    status_host = (
        ingress["domainTemplate"].replace("{{ .Name }}", GRAPH_NAME).replace("{{ .Namespace }}", SERVING)
        .replace("{{ .IngressDomain }}", ingress["ingressDomain"])
    )
    assert route["spec"]["hosts"] == [status_host]
    (ref,) = route["spec"]["gateways"]
    ns, name = ref.split("/")
    gateway = named([o for o in objs if o["metadata"].get("namespace") == ns], "Gateway", name)
    (pods,) = _gateway_pods(objs)
    assert matches(gateway["spec"]["selector"], pods["spec"]["template"]["metadata"]["labels"])
    assert any(h == "*" or status_host.endswith(h.lstrip("*")) for s in gateway["spec"]["servers"] for h in s["hosts"])
    # the router pods (KServe labels them serving.kserve.io/inferencegraph) admit the gateway
    policy = named(objs, "NetworkPolicy", "graph-router-allow-gateway-airflow")
    assert policy["spec"]["podSelector"]["matchExpressions"][0]["key"] == "serving.kserve.io/inferencegraph"
    sources = [f["podSelector"]["matchLabels"] for r in policy["spec"]["ingress"] for f in r["from"]]
    assert any(matches(src, pods["spec"]["template"]["metadata"]["labels"]) for src in sources)
    crds = CRDs(by_kind(objs, "CustomResourceDefinition"))
    assert crds.errors(route) == []


# ---------------------------------------------------------------- logging
@pytest.mark.parametrize("env", ENVS)
def test_filebeat_is_a_daemonset_that_reads_the_node_logs(plan_render, env):
    objs = plan_render(env)
    (beat,) = by_kind(objs, "Beat")
    assert beat["spec"]["type"] == "filebeat" and "daemonSet" in beat["spec"]
    (_, pod, _), = list(pod_specs(beat))
    (container,) = [c for c in pod["containers"] if c["name"] == "filebeat"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounted = {m["mountPath"] for m in container["volumeMounts"] if m["name"] in host_paths}
    assert {"/var/log/containers", "/var/log/pods"} <= mounted
    assert {"/var/log/containers", "/var/log/pods"} <= set(host_paths.values())
    env_vars = {e["name"]: e for e in container["env"]}
    assert env_vars["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert "${NODE_NAME}" in yaml.safe_dump(beat["spec"]["config"])
    account = pod["serviceAccountName"]
    named(objs, "ServiceAccount", account)
    granted: set[tuple[str, str]] = set()
    for binding in by_kind(objs, "ClusterRoleBinding"):
        if {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE} in binding["subjects"]:
            role = named(objs, "ClusterRole", binding["roleRef"]["name"])
            for rule in role["rules"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        granted.add((resource, verb))
    for resource in ("pods", "namespaces", "nodes"):
        for verb in ("get", "list", "watch"):
            assert (resource, verb) in granted, (resource, verb)


@pytest.mark.parametrize("env", ENVS)
def test_logstash_pipeline_uses_only_variables_eck_sets(plan_render, env):
    objs = plan_render(env)
    pipelines = named(objs, "Secret", "logstash-pipelines")["stringData"]["pipelines.yml"]
    used = set(re.findall(r"\$\{([A-Z_]+)\}", pipelines))
    es = named(objs, "Elasticsearch", values()["mlops"]["logging"]["elasticsearchName"])
    tls = not ((es["spec"].get("http") or {}).get("tls") or {}).get("selfSignedCertificate", {}).get("disabled")
    # cloud-on-k8s v3.5.0 pkg/controller/logstash/env.go: the CA variable only with TLS
    available = {"ES_ES_HOSTS", "ES_ES_USER", "ES_ES_PASSWORD"} | ({"ES_ES_SSL_CERTIFICATE_AUTHORITY"} if tls else set())
    assert used <= available
    assert ("ES_ES_SSL_CERTIFICATE_AUTHORITY" in used) == tls == (env == "production")


def test_airflow_verifies_elasticsearch_tls_in_production(plan_render):
    """Every Airflow process that talks to Elasticsearch (the api-server reads task logs back)
    verifies its certificate against the CA ECK generated."""
    objs = plan_render("production")
    es = values()["mlops"]["logging"]["elasticsearchName"]
    airflow = {"api-server", "scheduler", "dag-processor", "triggerer", "base"}  # base: task pods
    seen = set()
    for where, pod, _ in [p for o in workloads(objs) + by_kind(objs, "ConfigMap") for p in pod_specs(o)]:
        for c in pod.get("containers") or []:
            if c["name"] not in airflow:
                continue
            seen.add(c["name"])
            env_vars = {e["name"]: e.get("value") for e in c.get("env") or []}
            assert env_vars.get("AIRFLOW__ELASTICSEARCH_CONFIGS__VERIFY_CERTS") == "True", (where, c["name"])
            ca = env_vars["AIRFLOW__ELASTICSEARCH_CONFIGS__CA_CERTS"]
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
            volume = next(v for v in pod["volumes"] if v["name"] == mounts[ca.rsplit("/", 1)[0]])
            assert volume["secret"]["secretName"] == f"{es}-es-http-certs-public"
    assert seen == airflow


def test_kind_airflow_passes_no_tls_option_to_plain_http_elasticsearch(plan_render):
    text = yaml.safe_dump_all(plan_render("kind"))
    assert "AIRFLOW__ELASTICSEARCH_CONFIGS__" not in text
    assert "es-http-certs-public" not in text


# ---------------------------------------------------------------- resources, images
@pytest.mark.parametrize("env", ENVS)
def test_every_container_has_memory_requests_and_limits(plan_render, env):
    missing = []
    objs = plan_render(env)
    for obj in workloads(objs) + by_kind(objs, "ConfigMap"):
        for where, pod, main in pod_specs(obj):
            if main and main not in {c["name"] for c in pod.get("containers") or []}:
                missing.append(f"{ident(obj)} {where}: no {main} container with resources")
            for c in containers(pod):
                res = c.get("resources") or {}
                if not (res.get("requests") or {}).get("memory") or not (res.get("limits") or {}).get("memory"):
                    missing.append(f"{ident(obj)} {where}: {c['name']}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("env", ENVS)
def test_task_pods_run_the_project_image_with_the_worker_account(plan_render, env):
    objs = plan_render(env)
    pod = pod_template(objs)
    (base,) = pod["spec"]["containers"]
    assert base["image"] == f"airflow-project/airflow:{PLAN_TAG}"
    assert pod["spec"]["serviceAccountName"] == values()["mlops"]["serving"]["airflowWorkerServiceAccount"]
    named(objs, "ServiceAccount", pod["spec"]["serviceAccountName"])
    assert pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
    assert matches(values()["mlops"]["serving"]["airflowWorkerLabels"], pod["metadata"]["labels"])
    images = {c.get("image", "") for w in workloads(objs) for _, p, _ in pod_specs(w) for c in containers(p)}
    assert {i for i in images if "airflow-project/" in i} == {f"airflow-project/airflow:{PLAN_TAG}"}


# ---------------------------------------------------------------- schemas
@pytest.mark.parametrize("env", ENVS)
def test_custom_resources_validate_strictly_against_their_crds(plan_render, env):
    objs = plan_render(env)
    crds = CRDs(by_kind(objs, "CustomResourceDefinition"))
    config = worker_serving_config(objs)
    built = [
        manifests.inference_service("wachttijden", "models:/wachttijden/1", config),
        manifests.inference_service("wachttijden-primary", "models:/wachttijden/1", config, cluster_local=True),
        manifests.inference_graph("wachttijden-mirror", "wachttijden-primary", "wachttijden-shadow", config),
        manifests.virtual_service_mirror("wachttijden-primary", "wachttijden-shadow", config, percentage=50),
    ]
    custom = [o for o in objs if o["apiVersion"].split("/")[0] in crds.groups()]
    assert {o["kind"] for o in custom} >= {"Gateway", "PeerAuthentication", "Elasticsearch", "Beat"}
    problems = [f"{ident(o)}: {e}" for o in custom + built for e in crds.errors(o)]
    assert not problems, "\n".join(problems)


def test_crd_validation_rejects_unknown_fields(plan_render):
    crds = CRDs(by_kind(plan_render("production"), "CustomResourceDefinition"))
    isvc = manifests.inference_service("wachttijden", "models:/wachttijden/1")
    isvc["spec"]["predictor"]["containers"][0]["imagePolicy"] = "x"
    vs = manifests.virtual_service_mirror("a", "b")
    vs["spec"]["http"][0]["mirrorShare"] = 5
    assert crds.errors(isvc) == [
        "spec.predictor.containers.0: Additional properties are not allowed ('imagePolicy' was unexpected)"
    ]
    assert crds.errors(vs) == ["spec.http.0: Additional properties are not allowed ('mirrorShare' was unexpected)"]


@pytest.mark.parametrize("env", ENVS)
def test_core_kinds_validate_for_the_lowest_supported_kubernetes(plan_render, env):
    objs = plan_render(env)
    crd_groups = CRDs(by_kind(objs, "CustomResourceDefinition")).groups()
    lowest = yaml.safe_load((ROOT / "helm/Chart.yaml").read_text())["kubeVersion"]
    version = re.search(r"(\d+\.\d+)", lowest).group(1)
    checked = 0
    for obj in objs:
        if obj["apiVersion"].split("/")[0] in crd_groups:
            continue
        kubernetes_validate.validate(obj, version, strict=True)
        checked += 1
    assert checked > 100
    assert version == "1.32"


def test_services_helper_knows_eck_services(plan_render):
    known = services(plan_render("production"))
    assert (f"{values()['mlops']['logging']['elasticsearchName']}-es-http", NAMESPACE) in known


# ---------------------------------------------------------------- MLflow's Host check
def mlflow_server_env(objs: list[dict]) -> dict[str, str]:
    """MLflow's literal environment: its Deployment's env values and its ConfigMaps (envFrom)."""
    (server,) = [d for d in by_kind(objs, "Deployment") if d["metadata"]["name"] == f"{RELEASE}-mlflow"]
    (container,) = server["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for ref in container.get("envFrom") or []:
        if "configMapRef" in ref:
            env |= named(objs, "ConfigMap", ref["configMapRef"]["name"])["data"]
    env |= {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}
    return env


@pytest.mark.parametrize("env", ENVS)
def test_mlflow_allows_the_host_of_every_in_cluster_client(plan_render, env, monkeypatch):
    """MLflow >= 3.5 answers 403 to a Host outside MLFLOW_SERVER_ALLOWED_HOSTS (default:
    localhost and private IPs), /health excepted, so the pod looks Ready while every client
    fails. Checked with MLflow's own allow-list functions (mlflow/server/security_utils.py)."""
    from mlflow.server import security_utils

    objs = plan_render(env)
    server_env = mlflow_server_env(objs)
    monkeypatch.delenv("MLFLOW_SERVER_ALLOWED_HOSTS", raising=False)
    if "MLFLOW_SERVER_ALLOWED_HOSTS" in server_env:
        monkeypatch.setenv("MLFLOW_SERVER_ALLOWED_HOSTS", server_env["MLFLOW_SERVER_ALLOWED_HOSTS"])
    allowed = security_utils.get_allowed_hosts_from_env() or security_utils.get_default_allowed_hosts()
    uris = mlflow_tracking_uris(objs, worker_serving_config(objs))
    refused = [
        f"{', '.join(where)}: {uri} (Host: {host})"
        for uri, where in uris.items()
        for host in host_headers(uri)
        if not security_utils.is_allowed_host_header(allowed, host)
    ]
    assert not refused, f"MLflow allows {allowed}; refused:\n" + "\n".join(refused)
    # the README's port-forward (kubectl port-forward svc/<release>-mlflow 5000:80)
    assert security_utils.is_allowed_host_header(allowed, "localhost:5000")
    # and it still refuses what no client uses (DNS rebinding)
    assert not security_utils.is_allowed_host_header(allowed, "mlflow.attacker.example")


@pytest.mark.parametrize("env", ENVS)
def test_mlflow_server_and_its_migration_run_the_clients_mlflow(plan_render, env):
    """The server's MLflow is the one the images' clients have (uv.lock), and the schema
    migration init container runs the same version (an older one leaves the schema behind)."""
    import tomllib

    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    (client,) = [p["version"] for p in lock["package"] if p["name"] == "mlflow"]
    (server,) = [d for d in by_kind(plan_render(env), "Deployment") if d["metadata"]["name"] == f"{RELEASE}-mlflow"]
    pod = server["spec"]["template"]["spec"]
    images = {c["name"]: c["image"] for c in containers(pod) if "mlflow" in c["image"]}
    assert images and all(i.endswith(f":{client}") for i in images.values()), images


# ---------------------------------------------------------------- sidecars of pods that finish
def injection_template(objs: list[dict]) -> str:
    """The sidecar template istiod injects with (ConfigMap istio-sidecar-injector)."""
    config = yaml.safe_load(named(objs, "ConfigMap", "istio-sidecar-injector")["data"]["config"])
    (default,) = config["defaultTemplates"]
    return config["templates"][default]


def native_sidecar(objs: list[dict], helm: str, work, annotations: dict[str, str], kubelet_native: bool) -> bool:
    """What the rendered injection template decides for a pod with `annotations`, evaluated
    with helm's Go template engine: its `$nativeSidecar` expression, with the pod's
    annotations and `.NativeSidecars` (what istiod's webhook detects from the kubelets:
    Istio 1.30 pkg/kube/inject/webhook.go detectNativeSidecar, true only when every node's
    kubelet is >= 1.33)."""
    import json
    import subprocess

    template = injection_template(objs)
    expr = re.search(r"\{\{ \$nativeSidecar := (.+?) \}\}", template).group(1)
    # the proxy becomes an init container with restartPolicy Always exactly then
    assert "{{ if $nativeSidecar }}restartPolicy: Always{{end}}" in template
    expr = expr.replace(".ObjectMeta.Annotations", ".Values.annotations").replace(".NativeSidecars", ".Values.nativeSidecars")
    chart_dir = work / "injection"
    (chart_dir / "templates").mkdir(parents=True, exist_ok=True)
    (chart_dir / "Chart.yaml").write_text("apiVersion: v2\nname: injection\nversion: 0.0.1\n")
    (chart_dir / "templates" / "decision.yaml").write_text("nativeSidecar: {{ " + expr + " }}\n")
    values = work / "pod.json"
    values.write_text(json.dumps({"annotations": annotations, "nativeSidecars": kubelet_native}))
    out = subprocess.run([helm, "template", "x", str(chart_dir), "-f", str(values)],
                         capture_output=True, text=True, check=True).stdout
    return yaml.safe_load(out)["nativeSidecar"] is True


def _pods_that_finish(objs: list[dict]) -> list[tuple[str, dict]]:
    """(name, pod metadata) of every rendered pod that runs to completion: Jobs and the
    KubernetesExecutor's task pods."""
    out = [(ident(j), j["spec"]["template"].get("metadata") or {}) for j in by_kind(objs, "Job")]
    out.append(("pod_template_file.yaml", pod_template(objs)["metadata"]))
    return out


@pytest.mark.parametrize("env", ENVS)
def test_every_injected_pod_that_finishes_gets_a_native_sidecar(plan_render, env, helm, tmp_path):
    """A classic istio-proxy container outlives the task container: the pod stays Running
    and the KubernetesExecutor never frees its slot. The e2e node (kind, Kubernetes 1.32)
    is below the 1.33 istiod needs to pick native sidecars by itself, so the pod asks."""
    objs = plan_render(env)
    kind_kubelet = int(re.search(r":v1\.(\d+)\.", e2e_module("kube").DEFAULT_NODE_IMAGE).group(1))
    assert kind_kubelet < 33  # why the annotation is needed there (drop it from 1.33 on)
    assert not native_sidecar(objs, helm, tmp_path, {}, kubelet_native=False)
    injected = [(n, m) for n, m in _pods_that_finish(objs) if (m.get("labels") or {}).get("sidecar.istio.io/inject") == "true"]
    assert [n for n, _ in injected] == ["pod_template_file.yaml"]
    for name, meta in injected:
        for kubelet_native in (False, True):
            assert native_sidecar(objs, helm, tmp_path, meta.get("annotations") or {}, kubelet_native), (name, kubelet_native)


# ---------------------------------------------------------------- log indices
# The index privileges of ECK's Logstash association user (cloud-on-k8s v3.5.0
# pkg/controller/elasticsearch/user/roles.go, LogstashUserRole): bulk writes anywhere else
# are refused with 403.
ECK_LOGSTASH_INDICES = ("logstash", "logstash-*", "ecs-logstash", "ecs-logstash-*", "logs-*", "metrics-*",
                        "synthetics-*", "traces-*")


@pytest.mark.parametrize("env", ENVS)
def test_logstash_writes_indices_ecks_role_allows_and_airflow_reads_the_task_logs(plan_render, env):
    import configparser
    from fnmatch import fnmatch

    objs = plan_render(env)
    indices = logstash_indices(logstash_config(objs))
    assert indices, logstash_config(objs)
    refused = [i for i in indices.values() if not any(fnmatch(i, p) for p in ECK_LOGSTASH_INDICES)]
    assert not refused, f"ECK's Logstash user may write only {ECK_LOGSTASH_INDICES}: {refused}"
    tasks = indices["[dag_id] and [task_id]"]
    predictions = indices["[model_name] and [request_id]"]
    assert tasks != predictions
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read_string(named(objs, "ConfigMap", "mlops-config")["data"]["airflow.cfg"])
    patterns = [p.strip() for p in cfg["elasticsearch"]["index_patterns"].split(",")]
    assert any(fnmatch(tasks, p) for p in patterns), (patterns, tasks)
    assert not any(fnmatch(predictions, p) for p in patterns), (patterns, predictions)


@pytest.mark.parametrize("env", ENVS)
def test_filebeat_ships_the_predictors_lines(plan_render, env):
    from airflow_project.serving.constants import CONTAINER_NAME

    (beat,) = by_kind(plan_render(env), "Beat")
    templates = beat["spec"]["config"]["filebeat.autodiscover"]["providers"][0]["templates"]
    conditions = [t["condition"] for t in templates]
    assert {"equals": {"kubernetes.container.name": CONTAINER_NAME}} in conditions
    assert {"equals": {"kubernetes.labels.component": "worker"}} in conditions


# ---------------------------------------------------------------- readiness between stages
@pytest.mark.parametrize("env", ENVS)
def test_the_plan_waits_for_every_ca_bundle_cainjector_fills(plan_render, env, renderable):
    """cainjector fills caBundle asynchronously; `--wait` does not wait for it. Every webhook
    configuration a stage renders with a cert-manager injection annotation is one the plan's
    wait after that stage looks at (readiness.waiting_for_ca, with caBundle still empty as
    the API server first has it)."""
    import tarfile

    from airflow_project.release import readiness

    for stage, kinds in (("controllers", {"mlops-cert-manager-webhook"}), ("kserve", {"inferenceservice.serving.kserve.io"})):
        objs = plan_render(env, stage)
        hooks = [o for o in objs if o["kind"].endswith("WebhookConfiguration")]
        injected = [o for o in hooks if any(a.startswith("cert-manager.io/inject") for a in o["metadata"].get("annotations") or {})]
        assert kinds <= {o["metadata"]["name"] for o in injected}, stage
        waited = readiness.waiting_for_ca(injected)
        assert len(waited) == sum(len(o["webhooks"]) for o in injected) and waited, stage
    # cert-manager's own check runs as a post-install hook only: never in stage 2's upgrade
    (dep,) = [d for d in chart.dependencies() if d["name"] == "cert-manager"]
    with tarfile.open(renderable.path / "charts" / chart.package_name(dep)) as tgz:
        upstream = yaml.safe_load(tgz.extractfile("cert-manager/values.yaml"))
    assert upstream["startupapicheck"]["jobAnnotations"]["helm.sh/hook"] == "post-install"
    assert not [j for j in by_kind(plan_render(env, "controllers"), "Job") if "startupapicheck" in j["metadata"]["name"]]
