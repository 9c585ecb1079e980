"""The job `mlops up` runs through Airflow's REST API, and the serving it leaves behind.

Runs are reused, retried or followed, never duplicated: `prepare_dataset` for today's date,
the `train_model` run its asset event created, at most one extra training per day (a second
estimator, so that there is a shadow to serve) and one `deploy_traffic_mirroring` run,
skipped when the local serving controller already serves the wanted versions. The README
("Quick start") describes what the user sees.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from airflow_project.local.airflow_api import (
    FAILED_TASK_STATES,
    TERMINAL_RUN_STATES,
    AirflowApiError,
    AirflowClient,
)
from airflow_project.local.config import (
    AIRFLOW_ADMIN_USER,
    MIRROR_DAG,
    PREPARE_DAG,
    TRAIN_DAG,
    LocalConfig,
)
from airflow_project.local.errors import PlatformError
from airflow_project.local.models import (
    DataReport,
    data_report,
    model_summary,
    needs_second_model,
    registry_state,
    serving_versions,
    shadow_comparison,
    training_runs_url,
)
from airflow_project.local.summary import Endpoints, Reporter, duration, final_summary, try_it
from airflow_project.registry import model_uri
from airflow_project.serving.constants import (
    GRAPH_NAME,
    INFERENCE_GRAPH,
    INFERENCE_SERVICE,
    PRIMARY_SERVICE,
    SHADOW_SERVICE,
    VIRTUAL_SERVICE,
    mirror_name,
)

JOB_DAGS: tuple[str, ...] = (PREPARE_DAG, TRAIN_DAG, MIRROR_DAG)
SECOND_ESTIMATOR = "random_forest"
# Both mirrors: the InferenceGraph (Sequence, what KServe offers) and the mirror router (what
# Istio's VirtualService mirror does), so the summary shows the two ways and their URLs.
MIRROR_MODE = "both"
MIRROR_NAME = mirror_name(PRIMARY_SERVICE)


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def seed_data_lake(config: LocalConfig, rows: int, report: Reporter) -> str:
    """The data lake's containers, and today's raw export (generated once per day)."""
    from airflow_project.datalake import CONTAINERS, RAW_CONTAINER, BlobRef, DataLake, dataset_path
    from airflow_project.wachttijden.synthetic import SyntheticConfig, generate, to_raw_bytes

    lake = DataLake.from_connection_string(config.azurite_connection_string)
    lake.ensure_containers()
    report(f"data lake containers ready: {', '.join(CONTAINERS)}")
    day = today()
    ref = BlobRef(RAW_CONTAINER, dataset_path(day))
    if lake.exists(ref):
        report(f"raw export for {day} already in the data lake: {ref}")
        return str(ref)
    seed = int(day.strftime("%Y%m%d"))
    data = to_raw_bytes(generate(SyntheticConfig(rows=rows, seed=seed)))
    lake.write(ref, data)
    report(f"uploaded a generated raw export ({rows} rows, seed {seed}) to {ref}")
    return str(ref)


def restore_serving(config: LocalConfig, report: Reporter, deadline: float) -> None:
    """Start again every serving object recorded under the home that does not run (stopped
    by `down`, or crashed), on its port, before the job looks at what serves. A failure is
    reported, not fatal: the job deploys what it needs itself."""
    from airflow_project.serving.targets.local import restore_local_serving

    if not (config.root / "serving").is_dir():
        return
    timeout = max(30.0, min(300.0, deadline - time.monotonic()))
    for key, url, error in restore_local_serving(config.root, timeout):
        if error is None:
            report(f"restored serving {key} on {url}")
        else:
            report(f"could not restore serving {key} ({url}): {error.splitlines()[0]}")


def run(config: LocalConfig, report: Reporter, deadline: float, drift_demo_rows: int = 0) -> str:
    password = wait_for(lambda: config.airflow_password(), deadline, "the Airflow admin password file")
    with AirflowClient(config.airflow_url, AIRFLOW_ADMIN_USER, password) as api:
        wait_for_dags(api, report, deadline, dag_ids=JOB_DAGS)
        logical_date = dt.datetime.combine(today(), dt.time(0), tzinfo=dt.UTC)
        prepare = ensure_prepare_run(api, logical_date, report)
        prepare = follow_run(api, PREPARE_DAG, prepare, report, deadline)
        train = find_asset_run(api, prepare["dag_run_id"], report, deadline)
        train = follow_run(api, TRAIN_DAG, train, report, deadline)
        registry = registry_state(config)
        if needs_second_model(registry):
            report(f"only one model version behind champion/challenger (version {registry.champion}): "
                   f"training a second estimator ({SECOND_ESTIMATOR}) so that there is a shadow to serve")
            second = ensure_second_model_run(api, today(), report)
            follow_run(api, TRAIN_DAG, second, report, deadline)
            registry = registry_state(config)
        primary, shadow = serving_versions(registry)
        endpoints = ensure_mirroring(api, config, primary, shadow, report, deadline)
        monitoring = watch(api, config, endpoints, report, deadline)
        demo_report = drift_demo(api, config, drift_demo_rows, report, deadline) if drift_demo_rows else None
    models = [model_summary(config, version, registry) for version in dict.fromkeys((primary, shadow))]
    demo = try_it(endpoints)
    comparison = shadow_comparison(config)
    data = data_report(config, todays_export())
    return final_summary(config, password, models, endpoints, demo, comparison, report, data, demo_report,
                         training_runs_url(config), monitoring=monitoring)


def watch(api: AirflowClient, config: LocalConfig, endpoints: Endpoints, report: Reporter,
          deadline: float) -> list[str]:
    """A little traffic through the mirror router, captured, and one monitor_serving run (`local.watch`)."""
    from airflow_project.local.watch import watch_serving

    return watch_serving(api, config, endpoints, today(), report, deadline)


def todays_export() -> str:
    """The raw export `up` seeds and prepares today, as the data checks name it."""
    from airflow_project.datalake import RAW_CONTAINER, BlobRef, dataset_path

    return str(BlobRef(RAW_CONTAINER, dataset_path(today())))


DRIFT_DEMO_RAW = "demo/drifted/wachttijden.csv"
"""Inside the raw container but outside `wachttijden/`: no schedule or training picks it up."""


def drift_demo(api: AirflowClient, config: LocalConfig, rows: int, report: Reporter,
               deadline: float) -> DataReport:
    """`mlops up --drift-demo`: a drifted export (synthetic.DRIFTED) through prepare_dataset,
    which the data gate must stop; its data report for the summary."""
    from airflow_project.datalake import RAW_CONTAINER, BlobRef, DataLake
    from airflow_project.wachttijden.synthetic import DRIFTED, generate, to_raw_bytes

    ref = BlobRef(RAW_CONTAINER, DRIFT_DEMO_RAW)
    DataLake.from_connection_string(config.azurite_connection_string).write(
        ref, to_raw_bytes(generate(replace(DRIFTED, rows=rows, seed=1))))
    run_id = f"mlops_up__drift_demo__{dt.datetime.now(dt.UTC):%Y-%m-%dT%H-%M-%S}"
    run = _triggered(PREPARE_DAG, api.trigger(PREPARE_DAG, None, note="drift demo, triggered by mlops up",
                                              conf={"raw_path": DRIFT_DEMO_RAW}, run_id=run_id), conflict=False)
    report(f"drift demo: uploaded a drifted export ({rows} rows: +4 weeks, 3 specialisms renamed, 30% "
           f"unusable) to {ref}; triggered {PREPARE_DAG} run {run_id}, which the data gate must stop")
    try:
        follow_run(api, PREPARE_DAG, run, report, deadline)
        stopped = None
    except PlatformError as exc:
        stopped = exc
    found = data_report(config, str(ref))
    if stopped is None or found is None or "gate failed" not in found.headline:
        raise PlatformError(f"drift demo: the data gate did not stop {ref}"
                            + (f": {stopped}" if stopped else " (the run succeeded)"))
    report(f"drift demo: stopped by the data gate, as it should be: {found.headline}")
    return found


def wait_for(probe: Callable[[], Any], deadline: float, what: str, interval: float = 1.0) -> Any:
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def wait_for_dags(api: AirflowClient, report: Reporter, deadline: float,
                   wait: float = 300.0, wait_with_errors: float = 60.0,
                   dag_ids: tuple[str, ...] = (PREPARE_DAG, TRAIN_DAG)) -> None:
    """Until the DAGs are parsed; import errors that persist for a minute fail early."""
    report(f"waiting for the DAGs {', '.join(dag_ids[:-1])} and {dag_ids[-1]} to be parsed")
    started = time.monotonic()
    errors_reported: set[str] = set()
    while True:
        dags = {dag_id: api.get_dag(dag_id) for dag_id in dag_ids}
        if all(dags.values()):
            break
        errors = api.import_errors()
        for error in errors:
            key = f"{error.get('filename')}:{error.get('timestamp')}"
            if key not in errors_reported:
                errors_reported.add(key)
                first = str(error.get("stack_trace", "")).strip().splitlines()[-1:] or [""]
                report(f"DAG import error in {error.get('filename')}: {first[0]}")
        now = time.monotonic()
        limit = started + (wait_with_errors if errors else wait)
        if now > limit or now > deadline:
            missing = [d for d, v in dags.items() if not v]
            detail = "".join(
                f"\n--- {e.get('filename')}\n{str(e.get('stack_trace', '')).strip()[-1500:]}" for e in errors
            )
            raise PlatformError(
                f"DAG(s) {', '.join(missing)} not found in Airflow after {now - started:.0f}s"
                + (f"; import errors:{detail}" if errors else
                   "; see logs/airflow-dag-processor.log")
            )
        time.sleep(2.0)
    for dag_id, dag in dags.items():
        if dag and dag.get("is_paused"):
            api.unpause(dag_id)
            report(f"unpaused {dag_id}")
    report("DAGs are parsed")


def ensure_prepare_run(api: AirflowClient, logical_date: dt.datetime, report: Reporter) -> dict[str, Any]:
    """The prepare_dataset run for logical_date: reused, retried or newly triggered."""
    for attempt in range(3):
        existing = api.runs_for_logical_date(PREPARE_DAG, logical_date)
        if existing:
            run = existing[0]
            return reuse_run(api, PREPARE_DAG, run, report)
        run = _triggered(PREPARE_DAG, api.trigger(PREPARE_DAG, logical_date, note="triggered by mlops up"))
        if run is not None:  # else 409: the scheduler created it meanwhile
            report(f"triggered {PREPARE_DAG} run {run['dag_run_id']} "
                   f"(logical date {logical_date:%Y-%m-%d})")
            return run
    raise PlatformError(f"could not trigger or find the {PREPARE_DAG} run for {logical_date:%Y-%m-%d}")


def _triggered(dag_id: str, response: Any, conflict: bool = True) -> dict[str, Any] | None:
    """The new run of a trigger request; None for 409 (the run exists) when `conflict`."""
    if response.status_code in (200, 201):
        return response.json()
    if response.status_code == 409 and conflict:
        return None
    raise AirflowApiError(
        f"triggering {dag_id} failed: HTTP {response.status_code} {response.text[:300]}", response.status_code
    )


def reuse_run(api: AirflowClient, dag_id: str, run: dict[str, Any], report: Reporter) -> dict[str, Any]:
    state = run.get("state")
    run_id = run["dag_run_id"]
    if state == "success":
        report(f"{dag_id} run {run_id} already succeeded: reusing it (no new run)")
    elif state == "failed":
        api.clear_failed(dag_id, run_id)
        report(f"{dag_id} run {run_id} had failed: cleared its failed tasks to retry them")
        run = api.get_run(dag_id, run_id)
    else:
        report(f"{dag_id} run {run_id} is {state}: following it")
    return run


def find_asset_run(api: AirflowClient, source_run_id: str, report: Reporter,
                    deadline: float, wait: float = 180.0) -> dict[str, Any]:
    """The train_model run that consumed the Asset event of the given prepare_dataset run."""
    report(f"waiting for the {TRAIN_DAG} run triggered by the Asset event of {source_run_id}")
    limit = min(deadline, time.monotonic() + wait)
    checked: set[str] = set()
    while True:
        for run in api.runs(TRAIN_DAG, run_type="asset_triggered", order_by="-run_after", limit=20):
            run_id = run["dag_run_id"]
            if run_id in checked:
                continue
            try:
                events = api.upstream_asset_events(TRAIN_DAG, run_id)
            except AirflowApiError as exc:
                # Airflow 3.3.2 answers 500 here while the asset-triggered run has not
                # started yet (start_date None fails its response model): ask again later.
                if exc.status == 500:
                    continue
                raise
            if any(e.get("source_run_id") == source_run_id and e.get("source_dag_id") == PREPARE_DAG
                   for e in events):
                if run.get("state") in TERMINAL_RUN_STATES:
                    return reuse_run(api, TRAIN_DAG, run, report)
                report(f"{TRAIN_DAG} run {run_id} was created by the Asset event")
                return run
            checked.add(run_id)
        if time.monotonic() > limit:
            raise PlatformError(
                f"no {TRAIN_DAG} run was created from the Asset event of {PREPARE_DAG} run "
                f"{source_run_id}; check that {TRAIN_DAG} is scheduled on the Asset {PREPARE_DAG} emits "
                f"and see {api.base_url}/dags/{TRAIN_DAG}"
            )
        time.sleep(2.0)


def follow_run(api: AirflowClient, dag_id: str, run: dict[str, Any], report: Reporter,
                deadline: float) -> dict[str, Any]:
    """Poll a run, printing each task's state changes, until it finishes."""
    run_id = run["dag_run_id"]
    seen: dict[str, str] = {}
    started = time.monotonic()
    first = True
    while True:
        run = api.get_run(dag_id, run_id)
        tasks = api.task_instances(dag_id, run_id)
        for ti in sorted(tasks, key=lambda t: (t.get("start_date") or "~", t["task_id"])):
            key = ti["task_id"] if ti.get("map_index", -1) in (-1, None) else f"{ti['task_id']}[{ti['map_index']}]"
            state = ti.get("state") or "none"
            if seen.get(key) != state:
                seen[key] = state
                if state not in ("none", "scheduled"):
                    seconds = ti.get("duration")
                    took = f" in {seconds:.1f}s" if isinstance(seconds, (int, float)) and state == "success" else ""
                    report(f"  {dag_id}.{key}: {state}{took}")
        state = run.get("state")
        if state == "success":
            took = "" if first else f" ({duration(time.monotonic() - started)})"
            report(f"{dag_id} run {run_id} succeeded{took}")
            return run
        first = False
        if state == "failed":
            raise PlatformError(_failure_message(api, dag_id, run_id, tasks))
        if time.monotonic() > deadline:
            unfinished = [t["task_id"] for t in tasks if t.get("state") not in ("success", "skipped")]
            detail = ""
            for ti in tasks:
                if ti.get("state") == "running":
                    detail += _task_log_tail(api, dag_id, run_id, ti)
            raise TimeoutError(
                f"{dag_id} run {run_id} still {state} at the timeout; unfinished tasks: "
                f"{', '.join(unfinished) or '-'}{detail}"
            )
        time.sleep(2.0)


def _task_log_tail(api: AirflowClient, dag_id: str, run_id: str, ti: dict[str, Any], lines: int = 25) -> str:
    try_number = int(ti.get("try_number") or 1)
    text = ""
    try:
        text = api.task_log(dag_id, run_id, ti["task_id"], try_number)
    except (AirflowApiError, OSError):
        pass
    body = "\n".join(text.splitlines()[-lines:]) if text.strip() else "(no log)"
    return f"\n--- log of {dag_id}.{ti['task_id']} (try {try_number}), last lines:\n{body}"


def _failure_message(api: AirflowClient, dag_id: str, run_id: str, tasks: list[dict[str, Any]]) -> str:
    failed = [t for t in tasks if t.get("state") == "failed"] or \
             [t for t in tasks if t.get("state") in FAILED_TASK_STATES]
    names = ", ".join(t["task_id"] for t in failed) or "unknown task"
    message = f"{dag_id} run {run_id} failed (failed task: {names})"
    for ti in failed[:2]:
        message += _task_log_tail(api, dag_id, run_id, ti)
    message += f"\nSee {api.base_url}/dags/{dag_id}/runs/{run_id}"
    return message


def second_model_run_id(day: dt.date) -> str:
    return f"mlops_up__{SECOND_ESTIMATOR}__{day:%Y-%m-%d}"


def second_model_conf(day: dt.date) -> dict[str, Any]:
    """train_model params of the second model: today's preprocessed dataset, another estimator."""
    from airflow_project.datalake import PREPROCESSED_CONTAINER, dataset_path

    return {"estimator": SECOND_ESTIMATOR, "input_path": f"{PREPROCESSED_CONTAINER}/{dataset_path(day)}"}


def _existing_run(api: AirflowClient, dag_id: str, run_id: str) -> dict[str, Any] | None:
    try:
        return api.get_run(dag_id, run_id)
    except AirflowApiError as exc:
        if exc.status == 404:
            return None
        raise


def ensure_second_model_run(api: AirflowClient, day: dt.date, report: Reporter) -> dict[str, Any]:
    """The day's extra train_model run (fixed run id): reused, retried or newly triggered."""
    run_id = second_model_run_id(day)
    for _ in range(2):
        run = _existing_run(api, TRAIN_DAG, run_id)
        if run is not None:
            return reuse_run(api, TRAIN_DAG, run, report)
        conf = second_model_conf(day)
        run = _triggered(TRAIN_DAG, api.trigger(TRAIN_DAG, None, note="second model, triggered by mlops up",
                                                conf=conf, run_id=run_id))
        if run is not None:
            report(f"triggered {TRAIN_DAG} run {run_id} (estimator {conf['estimator']}, "
                   f"input {conf['input_path']})")
            return run
    raise PlatformError(f"could not trigger or find the {TRAIN_DAG} run {run_id}")


def mirroring_conf(primary: int, shadow: int) -> dict[str, Any]:
    """deploy_traffic_mirroring params: versions pinned by number, the DAG's default names."""
    return {
        "primary_model": str(primary), "shadow_model": str(shadow),
        "primary_service": PRIMARY_SERVICE, "shadow_service": SHADOW_SERVICE, "graph_name": GRAPH_NAME,
        "mirror_mode": MIRROR_MODE, "timeout_seconds": 300,
    }


def _record_model_uri(obj: dict[str, Any]) -> str | None:
    argv = [str(a) for a in obj.get("argv") or []]
    for i, arg in enumerate(argv[:-1]):
        if arg == "--model-uri":
            return argv[i + 1]
    return None


def find_mirroring(objects: list[dict[str, Any]], namespace: str, primary: int,
                   shadow: int) -> Endpoints | None:
    """The endpoints when primary, shadow, graph and mirror router all run and are ready with
    these versions in `namespace`; None when anything is missing, stopped or serves another version."""
    by_key = {(o.get("namespace"), o.get("kind"), o.get("name")): o for o in objects}
    wanted = ((INFERENCE_SERVICE, PRIMARY_SERVICE, primary), (INFERENCE_SERVICE, SHADOW_SERVICE, shadow),
              (INFERENCE_GRAPH, GRAPH_NAME, None), (VIRTUAL_SERVICE, MIRROR_NAME, None))
    urls: list[str] = []
    for kind, name, version in wanted:
        obj = by_key.get((namespace, kind, name))
        if obj is None or not obj.get("running") or not obj.get("ready", True) or not obj.get("url"):
            return None
        if version is not None and _record_model_uri(obj) != model_uri(version):
            return None
        urls.append(str(obj["url"]).rstrip("/"))
    return Endpoints(predictor=urls[0], shadow=urls[1], graph=urls[2], mirror=urls[3], primary_version=primary,
                     shadow_version=shadow, namespace=namespace)


def serving_records(config: LocalConfig, probe: bool = False) -> list[dict[str, Any]]:
    """The local serving controller's objects under the home (all namespaces), with `running`
    (and with `probe`, `ready`, `degraded` and `reason`)."""
    from airflow_project.serving.targets.local import local_serving_objects

    try:
        return local_serving_objects(config.root, probe=probe)
    except (OSError, ValueError, KeyError):
        return []


def serving_objects(config: LocalConfig) -> list[dict[str, Any]]:
    """`serving_records` with their readiness: a router only when what it routes to serves."""
    return serving_records(config, probe=True)


def serving_namespace() -> str:
    from airflow_project.serving.targets import default_namespace

    return default_namespace()


def reserve_serving_ports(config: LocalConfig, namespace: str) -> None:
    """Allocate primary, graph, shadow, mirror ports in this order (no-op for names that have
    one): a fresh home gets predictor 8100, graph 8101 (the loadtest defaults), shadow 8102
    and mirror router 8103, whatever order the DAG's parallel tasks deploy in."""
    from airflow_project.serving.targets.local import LocalTarget

    target = LocalTarget(namespace, home=config.root, base_port=config.ports.serving)
    target.reserve_ports([(INFERENCE_SERVICE, PRIMARY_SERVICE), (INFERENCE_GRAPH, GRAPH_NAME),
                          (INFERENCE_SERVICE, SHADOW_SERVICE), (VIRTUAL_SERVICE, MIRROR_NAME)])


def ensure_mirroring(api: AirflowClient, config: LocalConfig, primary: int, shadow: int,
                     report: Reporter, deadline: float) -> Endpoints:
    """Champion as primary, the other version as shadow, behind a graph and a mirror router:
    reused when they already serve these versions, else deployed by a deploy_traffic_mirroring run."""
    namespace = serving_namespace()
    found = find_mirroring(serving_objects(config), namespace, primary, shadow)
    if found is not None:
        report(f"serving already runs version {primary} (primary) and {shadow} (shadow) behind "
               f"{GRAPH_NAME} and {MIRROR_NAME}: not redeploying")
        return replace(found, deployed=False)
    active = [r for r in api.runs(MIRROR_DAG, order_by="-run_after", limit=10)
              if r.get("state") in ("queued", "running")]
    if active:
        report(f"{MIRROR_DAG} run {active[0]['dag_run_id']} is {active[0].get('state')}: following it first")
        follow_run(api, MIRROR_DAG, active[0], report, deadline)
        found = find_mirroring(serving_objects(config), namespace, primary, shadow)
        if found is not None:
            return found
    reserve_serving_ports(config, namespace)
    run_id = f"mlops_up__v{primary}-v{shadow}__{dt.datetime.now(dt.UTC):%Y-%m-%dT%H-%M-%S}"
    run = _triggered(MIRROR_DAG, api.trigger(MIRROR_DAG, None, note="deployed by mlops up",
                                             conf=mirroring_conf(primary, shadow), run_id=run_id), conflict=False)
    report(f"triggered {MIRROR_DAG} run {run_id} (primary version {primary}, shadow version {shadow}, "
           f"mirror mode {MIRROR_MODE})")
    follow_run(api, MIRROR_DAG, run, report, deadline)
    objects = serving_objects(config)
    found = find_mirroring(objects, namespace, primary, shadow)
    if found is None:
        seen = ", ".join(f"{o.get('kind')} {o.get('namespace')}/{o.get('name')} "
                         f"({'ready' if o.get('ready') else 'running' if o.get('running') else 'stopped'})"
                         for o in objects) or "none"
        raise PlatformError(
            f"{MIRROR_DAG} run {run_id} succeeded, but the local serving controller does not run "
            f"{PRIMARY_SERVICE} (version {primary}), {SHADOW_SERVICE} (version {shadow}), {GRAPH_NAME} and "
            f"{MIRROR_NAME} ready in namespace {namespace!r} (found: {seen}); see {config.logs / 'serving'}"
        )
    return found
