"""KServe serving: predictor (`predictor`, `server`), manifest builders (`manifests`),
local InferenceGraph router (`router`). Import submodules explicitly; this package
imports nothing heavy so DAG files can use `airflow_project.serving.manifests`."""
