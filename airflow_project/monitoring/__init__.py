"""Watching what is served: captured traffic, drift, realised error and the shadow's agreement.

Airflow-free, like `wachttijden/`; the `monitor_serving` DAG and `mlops monitor` call it.

- `capture`: the layout KServe's blob logger writes (and the local capture process writes
  the same), and the one reader for it: `read_path`, `read_lake` -> `ServedTraffic`.
- `capture_process`: the local capture process beside the model servers.
- `analysis`: the measures, plain inputs in and dataclasses out (`input_drift`,
  `prediction_drift`, `realised_error`, `shadow_agreement`, `service_health`).
- `report`: one served version's measures against its thresholds, and the whole report.
- `tracking`: the report in MLflow (experiment `wachttijden-monitoring`) and its plots.
- `steps`: what the DAG's tasks do.
"""
