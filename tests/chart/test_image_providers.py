"""The Airflow image carries every provider its chart configuration names: the auth manager,
the executor, the remote task-log handler and the connection types. Each configured class
path or connection type is mapped to its distribution through the providers' own metadata
(the `apache_airflow_provider` entry points Airflow reads), then looked up in uv.lock and
in image/requirements-airflow.txt."""

from __future__ import annotations

import configparser
import inspect
import json
import re
import tomllib
from functools import lru_cache
from importlib.metadata import entry_points

import pytest
from chart_helpers import ROOT, by_kind, named

from airflow_project.release import devsecrets, requirements

pytestmark = [pytest.mark.chart, pytest.mark.usefixtures("real_subcharts")]


@lru_cache
def providers() -> dict[str, dict]:
    return {ep.load()()["package-name"]: ep.load()() for ep in entry_points(group="apache_airflow_provider")}


def distribution_of_class(path: str) -> str:
    for name, info in providers().items():
        listed = (
            info.get("auth-managers", [])
            + info.get("executors", [])
            + info.get("logging", [])
        )
        if path in listed:
            return name
    raise AssertionError(f"no installed provider declares {path}")


def distribution_of_conn_type(conn_type: str) -> str:
    for name, info in providers().items():
        if conn_type in {c["connection-type"] for c in info.get("connection-types", [])}:
            return name
    raise AssertionError(f"no installed provider declares connection type {conn_type!r}")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _in_lock() -> set[str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {_norm(p["name"]) for p in lock["package"]}


def _in_image() -> set[str]:
    text = (ROOT / requirements.AIRFLOW_FILE).read_text()
    return {_norm(m.group(1)) for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", text, re.MULTILINE)}


def configured(objs: list[dict]) -> dict[str, str]:
    """What the rendered Airflow configuration names -> its distribution."""
    from airflow.executors.executor_loader import ExecutorLoader

    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read_string(named(objs, "ConfigMap", "mlops-config")["data"]["airflow.cfg"])
    found = {}
    auth = cfg["core"]["auth_manager"]
    found[f"auth manager {auth}"] = distribution_of_class(auth)
    executor = cfg["core"]["executor"]
    found[f"executor {executor}"] = distribution_of_class(ExecutorLoader.executors.get(executor, executor))
    env_names = {
        e["name"]
        for d in by_kind(objs, "Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
        for e in c.get("env") or []
    }
    if cfg.getboolean("logging", "remote_logging") and "AIRFLOW__ELASTICSEARCH__HOST" in env_names:
        handler = _elasticsearch_handler()
        found[f"remote logging {handler}"] = distribution_of_class(handler)
    for conn_id, conn_type in _connection_types(objs, env_names).items():
        found[f"connection {conn_id} ({conn_type})"] = distribution_of_conn_type(conn_type)
    return found


def _elasticsearch_handler() -> str:
    """The handler class Airflow's default logging config picks when an Elasticsearch host is
    set (read from Airflow's own airflow_local_settings, not restated here)."""
    from airflow.config_templates import airflow_local_settings

    source = inspect.getsource(airflow_local_settings)
    branch = source[source.index("elif ELASTICSEARCH_HOST:") :]
    return re.search(r'"class": "([\w.]+)"', branch).group(1)


def _connection_types(objs: list[dict], env_names: set[str]) -> dict[str, str]:
    conns = {}
    secret = named(objs, "Secret", "mlops-airflow-connections")["stringData"]
    for key, value in secret.items():
        conns[key.removeprefix("AIRFLOW_CONN_").lower()] = json.loads(value)["conn_type"]
    dev = devsecrets.dev_values("mlops")  # the Secrets' documented formats, as kind fills them
    if "AIRFLOW_CONN_WASB_DATALAKE" in env_names:
        conns["wasb_datalake"] = json.loads(dev["airflow-conn-wasb-datalake"]["AIRFLOW_CONN_WASB_DATALAKE"])["conn_type"]
    if "AIRFLOW_CONN_AIRFLOW_DB" in env_names:
        scheme = dev["airflow-metadata"]["connection"].split("://")[0]
        conns["airflow_db"] = {"postgresql": "postgres"}.get(scheme, scheme)
    return conns


@pytest.mark.parametrize("env", ["production", "kind"])
def test_every_provider_the_chart_config_uses_is_locked_and_in_the_image(plan_render, env):
    found = configured(plan_render(env))
    assert {k.split()[0] for k in found} >= {"auth", "executor", "remote", "connection"}
    lock, image = _in_lock(), _in_image()
    problems = [
        f"{what}: {dist} missing from {where}"
        for what, dist in found.items()
        for where, names in (("uv.lock", lock), (requirements.AIRFLOW_FILE, image))
        if _norm(dist) not in names
    ]
    assert not problems, "\n".join(problems)
    assert set(found.values()) >= {
        "apache-airflow-providers-fab",
        "apache-airflow-providers-elasticsearch",
        "apache-airflow-providers-cncf-kubernetes",
        "apache-airflow-providers-microsoft-azure",
        "apache-airflow-providers-postgres",
    }


def test_mapping_refuses_what_no_provider_declares():
    with pytest.raises(AssertionError, match="no installed provider declares"):
        distribution_of_class("airflow.providers.nothing.NoAuthManager")
    with pytest.raises(AssertionError, match="connection type 'gopher'"):
        distribution_of_conn_type("gopher")
