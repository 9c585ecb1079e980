"""`python -m airflow_project.serving --model-uri URI --name NAME --port P [--tracking-uri URI]`.

Runs the predictor in the foreground (see `airflow_project.serving.server.serve`).
KServe-style spellings (`--model_name`, `--model_uri`, `--http_port`) are accepted too:
the InferenceService manifest passes `--model_name` because KServe's graph controller reads
the served model name from that argument. Without `--tracking-uri`, MLflow uses
`MLFLOW_TRACKING_URI`.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from airflow_project.serving.constants import (
        DEFAULT_HTTP_PORT,
        MAX_BODY_BYTES,
        SERVED_MODEL_NAME,
    )

    p = argparse.ArgumentParser(prog="python -m airflow_project.serving", allow_abbrev=False)
    p.add_argument("--model-uri", "--model_uri", dest="model_uri",
                   default=os.environ.get("MODEL_URI"), help="models:/<name>/<version> or models:/<name>@<alias>")
    p.add_argument("--name", "--model_name", "--model-name", dest="name", default=SERVED_MODEL_NAME)
    p.add_argument("--port", "--http_port", "--http-port", dest="port", type=int, default=DEFAULT_HTTP_PORT)
    p.add_argument("--tracking-uri", "--tracking_uri", dest="tracking_uri",
                   default=os.environ.get("MLFLOW_TRACKING_URI"))
    p.add_argument("--max-body-bytes", dest="max_body_bytes", type=int, default=MAX_BODY_BYTES)
    args, _unknown = p.parse_known_args(argv)  # kserve's own flags may be present too
    if not args.model_uri:
        p.error("--model-uri (or MODEL_URI) is required")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    from airflow_project.serving.server import serve

    serve(args.model_uri, args.name, args.port, args.tracking_uri, max_body_bytes=args.max_body_bytes)


if __name__ == "__main__":
    main()
