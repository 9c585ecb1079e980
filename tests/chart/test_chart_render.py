"""The umbrella chart: lint, render every stage, assert on the objects (jmespath)."""

from __future__ import annotations

import re
import subprocess
import tomllib

import jmespath
import kubernetes_validate
import pytest
import yaml
from chart_helpers import (
    ENVS,
    HELM_DIR,
    NAMESPACE,
    RELEASE,
    ROOT,
    SITE_VALUES,
    WORKLOAD_KINDS,
    by_kind,
    own,
    release_info,
    values,
)

from airflow_project.release import chart

pytestmark = pytest.mark.chart

CHART = yaml.safe_load((HELM_DIR / "Chart.yaml").read_text())
DEPS = CHART["dependencies"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


# ---------------------------------------------------------------- Chart.yaml / values
def test_chart_versions_follow_the_project():
    assert CHART["appVersion"] == PYPROJECT["project"]["version"]
    assert CHART["version"] == PYPROJECT["project"]["version"]


def test_every_dependency_is_pinned_conditioned_and_staged():
    names = {d["name"] for d in DEPS}
    assert {
        "airflow",
        "kserve-crd",
        "kserve-resources",
        "base",
        "istiod",
        "gateway",
        "cert-manager",
        "mlflow",
        "eck-operator",
        "eck-operator-crds",
        "eck-stack",
    } <= names
    for dep in DEPS:
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", str(dep["version"])), dep
        assert dep["repository"].startswith(("https://", "oci://")), dep
        # never `<key>.enabled`: a subchart's own default for it would beat the stage tags
        assert dep["condition"] == f"components.{chart.dependency_key(dep)}", dep
        assert len(dep["tags"]) == 1 and dep["tags"][0] in chart.STAGE_TAGS, dep
    assert jmespath.search("[?name=='airflow'].version | [0]", DEPS) == "1.22.0"
    assert jmespath.search("[?name=='kserve-resources'].tags[0] | [0]", DEPS) == "kserve"


@pytest.mark.parametrize("kind", [False, True])
def test_values_never_force_a_dependency_on(kind):
    """A condition set to true would override the stage tags (helm: conditions win over tags)."""
    vals = values(kind)
    assert all(v is False for v in (vals.get("components") or {}).values())
    for dep in DEPS:
        assert (vals.get(chart.dependency_key(dep)) or {}).get("enabled") is not True, dep["name"]
    assert all(vals["tags"][t] is True for t in chart.STAGE_TAGS)


def test_kserve_standard_mode_and_gateway_ref():
    vals = values()
    ks = vals["kserve-resources"]["kserve"]["controller"]
    assert ks["deploymentMode"] == "Standard"
    s = vals["mlops"]["serving"]
    assert ks["gateway"]["ingressGateway"]["gateway"] == f"{s['namespace']}/{s['gateway']['name']}"
    assert vals["istio-gateway"]["labels"] == s["gateway"]["selector"]
    # Istio serves KServe's Ingresses on the pods labelled istio=<ingressSelector>
    assert {"istio": vals["istiod"]["meshConfig"]["ingressSelector"]} == s["gateway"]["selector"]
    assert vals["istiod"]["meshConfig"]["ingressService"] == vals["istio-gateway"]["name"]


@pytest.mark.parametrize("kind", [False, True])
def test_airflow_values(kind):
    vals = values(kind)
    af = vals["airflow"]
    assert af["executor"] == "KubernetesExecutor"
    assert jmespath.search("dags.gitSync.enabled", af) is False
    assert jmespath.search("images.airflow.repository", af) == vals["mlops"]["images"]["airflow"]
    assert jmespath.search("images.airflow.tag", af) == CHART["appVersion"]
    assert jmespath.search("migrateDatabaseJob.useHelmHooks", af) is False
    assert jmespath.search("createUserJob.useHelmHooks", af) is False
    # no default account with a password from values: `make deploy` creates the admin
    # from the Secret airflow-admin (FAB auth manager, users in the metadata DB)
    assert jmespath.search("createUserJob.enabled", af) is False
    assert jmespath.search("config.core.auth_manager", af).endswith(
        "fab_auth_manager.FabAuthManager"
    )
    assert "airflow-admin" in vals["mlops"]["secrets"].values()
    assert af["postgresql"]["enabled"] is False
    # remote task logging to Elasticsearch, JSON on stdout
    assert af["elasticsearch"]["enabled"] is True
    assert af["elasticsearch"]["secretName"] == vals["mlops"]["secrets"]["airflowElasticsearch"]
    assert jmespath.search("config.logging.remote_logging", af) == "True"
    assert jmespath.search("config.elasticsearch.write_stdout", af) == "True"
    assert jmespath.search("config.elasticsearch.json_format", af) == "True"
    # static keys and DB from existing Secrets, no passwords in values
    sec = vals["mlops"]["secrets"]
    assert af["data"] == {"metadataSecretName": sec["airflowMetadata"]}
    assert af["fernetKeySecretName"] == sec["airflowFernetKey"]
    assert af["apiSecretKeySecretName"] == sec["airflowApiSecretKey"]
    assert af["jwtSecretName"] == sec["airflowJwtSecret"]
    assert (
        jmespath.search("secret[?envName=='AIRFLOW_CONN_WASB_DATALAKE'].secretName | [0]", af)
        == sec["datalakeConnection"]
    )
    # the worker service account is the one bound in the serving namespace
    assert (
        af["workers"]["kubernetes"]["serviceAccount"]["name"]
        == vals["mlops"]["serving"]["airflowWorkerServiceAccount"]
    )
    assert "{{ .Release.Name }}-airflow-connections" in af["extraEnvFrom"]
    assert "{{ .Release.Name }}-airflow-env" in af["extraEnvFrom"]


def test_required_secret_names_match_values():
    from airflow_project.release import devsecrets

    vals = values(True)
    names = {s.name for s in devsecrets.REQUIRED}
    referenced = set(vals["mlops"]["secrets"].values()) | {
        vals["mlops"]["kind"]["postgres"]["existingSecret"],
        vals["mlops"]["kind"]["azurite"]["existingSecret"],
        vals["mlflow"]["backendStore"]["existingDatabaseSecret"]["name"],
        *vals["mlflow"]["extraSecretNamesForEnvFrom"],
    }
    assert names == referenced


# ---------------------------------------------------------------- helm lint / schema
@pytest.mark.parametrize("env", ENVS)
def test_helm_lint(helm, renderable, env):
    args = [
        helm,
        "lint",
        str(renderable.path),
        "--strict",
        "--namespace",
        NAMESPACE,
        "-f",
        str(renderable.path / "values.yaml"),
    ]
    args += ["-f", str(renderable.path / "values-kind.yaml" if env == "kind" else SITE_VALUES)]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schema_rejects_unknown_keys_of_own_section(render):
    with pytest.raises(RuntimeError, match="additional properties 'imagetag' not allowed"):
        render("production", extra=("--set", "mlops.imagetag=x"))
    with pytest.raises(RuntimeError, match="additional properties"):
        render("production", extra=("--set", "mlops.serving.namespaces=x"))


def test_a_render_whose_mlflow_refuses_its_clients_host_fails_naming_it(render, helm, renderable):
    with pytest.raises(RuntimeError, match=r'does not name "mlops-mlflow.mlops.svc", the host of MLFLOW_TRACKING_URI'):
        render("production", extra=("--set-string", "mlflow.serverAllowedHosts={mlflow.other.svc}"))
    # another release name without `make deploy`'s flag
    values = [renderable.path / "values.yaml", SITE_VALUES]
    with pytest.raises(RuntimeError, match=r'does not name "ml-mlflow.mlops.svc"'):
        chart.template(helm, renderable.path, values, release="ml", namespace=NAMESPACE)
    # an external MLflow (mlops.airflow.mlflowTrackingUri) is not this release's to check
    render("production", extra=("--set-string", "mlflow.serverAllowedHosts={x}",
                                "--set-string", "mlops.airflow.mlflowTrackingUri=http://mlflow.ext:5000"))


# ---------------------------------------------------------------- stages
OWN_BY_STAGE = {
    "crds": set(),
    "controllers": set(),
    "kserve": set(),
    "platform": {
        "IngressClass",
        "Namespace",
        "Role",
        "RoleBinding",
        "Gateway",
        "PeerAuthentication",
        "NetworkPolicy",
        "Secret",
    },
    "airflow": {"Secret", "ConfigMap"},
}


@pytest.mark.parametrize("stage", chart.STAGE_TAGS)
def test_stage_toggle_renders_exactly_its_stage(render, stage):
    objs = render("kind", stages=(stage,))
    info = release_info(objs)
    assert info["stages"] == stage
    expected_deps = {chart.dependency_key(d) for d in DEPS if d["tags"] == [stage]}
    assert set(filter(None, info["dependencies"].split(","))) == expected_deps
    mine = [o for o in own(objs) if o["metadata"]["name"] != f"{RELEASE}-release-info"]
    kinds = {o["kind"] for o in mine}
    if stage == "platform":
        kinds -= {"Service", "Deployment", "StatefulSet", "ConfigMap"}  # kind-only services
    assert kinds == OWN_BY_STAGE[stage]
    if stage == "airflow":
        assert {o["metadata"]["name"] for o in mine} == {
            f"{RELEASE}-airflow-connections",
            f"{RELEASE}-airflow-env",
        }
    if chart_is_real(render):
        # with the real subcharts, CRDs appear only in the crds stage (cert-manager's with controllers)
        crds = by_kind(objs, "CustomResourceDefinition")
        assert bool(crds) == (stage in ("crds", "controllers"))


def chart_is_real(render) -> bool:
    return render.rc.mode == "real"


def test_cumulative_stages_as_in_the_plan(render):
    seen: set[str] = set()
    for i in range(1, len(chart.STAGE_TAGS) + 1):
        tags = chart.STAGE_TAGS[:i]
        deps = set(
            filter(None, release_info(render("production", stages=tags))["dependencies"].split(","))
        )
        assert seen < deps
        seen = deps
    assert seen == {chart.dependency_key(d) for d in DEPS}


# ---------------------------------------------------------------- images
@pytest.mark.parametrize("env", ENVS)
def test_images_are_the_app_version(render, env):
    objs = render(env)
    (cm,) = [
        o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"] == f"{RELEASE}-airflow-env"
    ]
    assert cm["data"]["MLOPS_PREDICTOR_IMAGE"] == f"airflow-project/predictor:{CHART['appVersion']}"
    assert cm["data"]["MLOPS_DEPLOY_TARGET"] == "kubernetes"
    assert cm["data"]["MLOPS_SERVING_NAMESPACE"] == "serving"
    assert cm["data"]["MLFLOW_TRACKING_URI"].startswith("http://")
    if chart_is_real(render):
        images = set(
            jmespath.search(
                "[?kind=='Deployment' || kind=='StatefulSet'].spec.template.spec.containers[].image",
                objs,
            )
        )
        airflow = {i for i in images if "airflow-project/airflow" in i}
        assert airflow == {f"airflow-project/airflow:{CHART['appVersion']}"}


def test_deploy_tag_and_registry_flow_into_images(render):
    objs = render(
        "production",
        extra=(
            "--set-string",
            "mlops.images.tag=9.9.9-abc1234",
            "--set-string",
            "mlops.images.registry=reg.example/",
        ),
    )
    (cm,) = [
        o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"] == f"{RELEASE}-airflow-env"
    ]
    assert (
        cm["data"]["MLOPS_PREDICTOR_IMAGE"] == "reg.example/airflow-project/predictor:9.9.9-abc1234"
    )


# ---------------------------------------------------------------- RBAC / network / mesh
@pytest.mark.parametrize("env", ENVS)
def test_rbac_is_namespaced_to_serving(render, env):
    objs = render(env)
    assert not by_kind(own(objs), "ClusterRole")
    assert not by_kind(own(objs), "ClusterRoleBinding")
    sa = values()["mlops"]["serving"]["airflowWorkerServiceAccount"]
    # no cluster-wide binding for the Airflow worker anywhere in the release
    for crb in by_kind(objs, "ClusterRoleBinding"):
        assert sa not in (jmespath.search("subjects[].name", crb) or []), crb["metadata"]["name"]
    (role,) = by_kind(own(objs), "Role")
    assert role["metadata"]["namespace"] == "serving"
    rules = {
        (g, r): set(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    for key in [
        ("serving.kserve.io", "inferenceservices"),
        ("serving.kserve.io", "inferencegraphs"),
        ("networking.istio.io", "virtualservices"),
    ]:
        assert {"get", "create", "patch", "delete"} <= rules[key]
    assert {g for g, _ in rules} == {"serving.kserve.io", "networking.istio.io"}
    (rb,) = by_kind(own(objs), "RoleBinding")
    assert rb["metadata"]["namespace"] == "serving"
    assert rb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]


def test_gateway_mtls_and_network_policies(render):
    objs = render("production")
    s = values()["mlops"]["serving"]
    (gw,) = by_kind(objs, "Gateway")
    assert gw["metadata"]["namespace"] == "serving"
    assert gw["spec"]["selector"] == s["gateway"]["selector"]
    (pa,) = by_kind(objs, "PeerAuthentication")
    assert pa["metadata"]["namespace"] == "serving" and pa["spec"]["mtls"]["mode"] == "STRICT"
    (ns,) = by_kind(objs, "Namespace")
    assert ns["metadata"]["labels"]["istio-injection"] == "enabled"
    pols = {p["metadata"]["name"]: p for p in by_kind(objs, "NetworkPolicy")}
    deny = pols["default-deny-ingress"]
    assert deny["spec"]["podSelector"] == {} and "ingress" not in deny["spec"]
    pred = pols["predictors-allow-gateway-router-airflow"]
    assert (
        jmespath.search("spec.podSelector.matchExpressions[0].key", pred)
        == "serving.kserve.io/inferenceservice"
    )
    peers = pred["spec"]["ingress"][0]["from"]
    assert len(pred["spec"]["ingress"]) == 1 and len(peers) == 3
    assert peers[0]["podSelector"]["matchLabels"] == s["gateway"]["selector"]
    assert peers[0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": NAMESPACE
    }
    assert (
        jmespath.search("podSelector.matchExpressions[0].key", peers[1])
        == "serving.kserve.io/inferencegraph"
    )
    assert "namespaceSelector" not in peers[1]
    assert peers[2]["podSelector"]["matchLabels"] == s["airflowWorkerLabels"]
    # the worker labels really are the Airflow chart's worker labels
    assert s["airflowWorkerLabels"] == {"component": "worker"}


# ---------------------------------------------------------------- workloads / secrets
def test_own_workloads_are_non_root_with_resources(render):
    objs = own(render("kind"))
    workloads = [o for o in objs if o["kind"] in WORKLOAD_KINDS]
    assert {o["metadata"]["name"] for o in workloads} == {"postgres", "azurite"}
    for w in workloads:
        spec = w["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc.get("privileged") is not True
            assert sc.get("runAsUser", 1) != 0
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"] and c["resources"]["limits"], c["name"]


_LITERAL = re.compile(
    r"(?i)(password|passwd|secret|accountkey|api[_-]?key|token)\"?\s*(=>|:|=(?!>))\s*\"?(?!\$\{)([^\"\s,;}]+)"
)


@pytest.mark.parametrize("env", ENVS)
def test_no_literal_secret_in_rendered_secrets(render, env):
    secrets = by_kind(render(env), "Secret")
    assert secrets, "expected the chart's own Secrets"
    for sec in secrets:
        for key, value in {**(sec.get("stringData") or {}), **(sec.get("data") or {})}.items():
            assert not _LITERAL.search(value), (
                f"{sec['metadata']['name']}/{key}: {_LITERAL.search(value).group(0)}"
            )
            assert "://" not in value or "@" not in value.split("://", 1)[1].split("/")[0], (
                sec["metadata"]["name"],
                key,
            )
            assert "AccountKey=" not in value


def test_literal_secret_detector_works():
    assert _LITERAL.search('password => "hunter2"')
    assert _LITERAL.search("AccountKey=abc;")
    assert not _LITERAL.search('password => "${ES_ES_PASSWORD}"')
    assert _LITERAL.search('{"password": "s3cret"}')


def test_connections_secret_is_in_cluster_kubernetes(render):
    (sec,) = [
        s
        for s in by_kind(render("production"), "Secret")
        if s["metadata"]["name"] == f"{RELEASE}-airflow-connections"
    ]
    conn = yaml.safe_load(sec["stringData"]["AIRFLOW_CONN_KUBERNETES_SERVING"])
    assert conn == {
        "conn_type": "kubernetes",
        "extra": {"in_cluster": True, "namespace": "serving"},
    }


def test_logstash_pipeline_adds_log_id_as_airflow_expects(render):
    (sec,) = [
        s
        for s in by_kind(render("production"), "Secret")
        if s["metadata"]["name"] == "logstash-pipelines"
    ]
    pipelines = yaml.safe_load(sec["stringData"]["pipelines.yml"])
    config = pipelines[0]["config.string"]
    template = values()["airflow"]["config"]["elasticsearch"]["log_id_template"]
    expected = re.sub(r"\{(\w+)\}", r"%{[\1]}", template)
    assert f'"log_id" => "{expected}"' in config
    assert "beats" in config and "elasticsearch {" in config
    prefix = values()["airflow"]["config"]["elasticsearch"]["index_patterns"].removesuffix("*")
    assert f'"[@metadata][index]" => "{prefix}%{{+YYYY.MM.dd}}"' in config
    assert (
        values()["eck-stack"]["eck-logstash"]["pipelinesRef"]["secretName"]
        == sec["metadata"]["name"]
    )


def test_task_log_index_pattern_must_be_one_prefix(render):
    with pytest.raises(RuntimeError, match=r'index_patterns is "a-\*,b-\*": .* must be one pattern <prefix>-\*'):
        render("production", extra=("--set-string", "airflow.config.elasticsearch.index_patterns=a-*\\,b-*"))


# ---------------------------------------------------------------- offline schema validation
CORE = {
    "Namespace",
    "ConfigMap",
    "Secret",
    "Service",
    "Deployment",
    "StatefulSet",
    "Role",
    "RoleBinding",
    "NetworkPolicy",
    "ServiceAccount",
    "DaemonSet",
    "Job",
    "PersistentVolumeClaim",
}


@pytest.mark.parametrize("env", ENVS)
def test_core_kinds_validate_offline(render, env):
    checked = 0
    for obj in render(env):
        if obj["kind"] in CORE:
            kubernetes_validate.validate(obj, "1.32", strict=True)
            checked += 1
    assert checked >= 8


# ---------------------------------------------------------------- upstream Airflow chart keys
def _deprecated_paths(values_text: str) -> set[tuple[str, ...]]:
    """Keys whose own comment block in the upstream values.yaml says "(deprecated": the
    chart's way of marking renamed settings."""
    deprecated, stack, comments = set(), [], []
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comments.append(stripped)
            continue
        m = re.match(r"^(\s*)([A-Za-z0-9_.-]+):(\s|$)", line)
        if not m:
            comments = [] if stripped else comments
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        if any("(deprecated" in c for c in comments):
            deprecated.add(tuple(k for _, k in stack))
        comments = []
    return deprecated


def _leaf_paths(node, prefix=()):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaf_paths(value, (*prefix, key))
    else:
        yield prefix


def test_deprecation_parser_reads_the_upstream_markers():
    text = "workers:\n  # (deprecated, use `workers.kubernetes.labels` instead)\n  labels: {}\n  kubernetes:\n    labels: {}\n"
    assert _deprecated_paths(text) == {("workers", "labels")}


@pytest.mark.parametrize("kind", [False, True])
def test_no_deprecated_airflow_chart_keys(real_subcharts, renderable, kind):
    import tarfile

    with tarfile.open(renderable.path / "charts" / "airflow-1.22.0.tgz") as tar:
        upstream = tar.extractfile("airflow/values.yaml").read().decode()
    deprecated = _deprecated_paths(upstream)
    assert ("workers", "serviceAccount") in deprecated  # the parser sees the 1.22 markers
    ours = values(kind)["airflow"]
    used = [
        ".".join(path)
        for path in _leaf_paths(ours)
        if any(path[:n] in deprecated for n in range(1, len(path) + 1))
    ]
    assert not used, f"deprecated Airflow chart keys in our values: {used}"
