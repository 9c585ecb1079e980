"""The predictor's command line: KServe's own model-server flags plus the model to serve.

The predictor image runs it as `mlops serve` (its entry point, and the InferenceService's
command); the local serving controller as `python -m airflow_project.serving`. Like KServe's
sklearnserver, the parser extends `kserve.model_server.parser`, so every KServe flag means
what KServe says and an unknown flag is an error. `--name` and `--port` are short
spellings of KServe's `--model_name` and `--http_port`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

# KServe flags handed to `kserve.ModelServer` (KServe reads the others itself).
SERVER_FLAGS = (
    "grpc_port", "workers", "max_threads", "max_asyncio_workers", "enable_grpc", "enable_docs_url",
    "enable_latency_logging", "access_log_format", "event_loop", "timeout_keep_alive", "ssl_certfile",
    "ssl_keyfile",
)


def build_parser(prog: str = "python -m airflow_project.serving") -> argparse.ArgumentParser:
    from kserve import model_server

    from airflow_project.serving.bounded_http import add_limit_flags
    from airflow_project.serving.constants import (
        DEFAULT_HOST,
        DEFAULT_HTTP_PORT,
        MAX_BODY_BYTES,
        PUBLIC_HOST,
        SERVED_MODEL_NAME,
    )
    from airflow_project.serving.server import SERVER_DEFAULTS

    parser = argparse.ArgumentParser(prog=prog, parents=[model_server.parser], allow_abbrev=False,
                                     description="Serve a registered wachttijden model with KServe.")
    parser.add_argument("--model-uri", "--model_uri", dest="model_uri", required=True,
                        help="models:/<name>/<version> or models:/<name>@<alias>")
    parser.add_argument("--name", "--model-name", dest="model_name", help="same as --model_name")
    parser.add_argument("--port", "--http-port", dest="http_port", type=int, help="same as --http_port")
    parser.add_argument("--tracking-uri", "--tracking_uri", dest="tracking_uri",
                        default=os.environ.get("MLFLOW_TRACKING_URI"), help="default: $MLFLOW_TRACKING_URI")
    parser.add_argument("--max-body-bytes", dest="max_body_bytes", type=int, default=MAX_BODY_BYTES,
                        help="larger requests are answered 413 before they are parsed")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default {DEFAULT_HOST}; the image and the InferenceService "
                             f"pass {PUBLIC_HOST})")
    add_limit_flags(parser)
    parser.set_defaults(model_name=SERVED_MODEL_NAME, http_port=DEFAULT_HTTP_PORT, **SERVER_DEFAULTS)
    return parser


def parse_args(argv: list[str], prog: str = "python -m airflow_project.serving") -> argparse.Namespace:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.workers != 1:
        parser.error("--workers: the predictor serves from one process (its fast path and prediction log "
                     "live there); run more replicas instead")
    return args


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    return {flag: getattr(args, flag) for flag in SERVER_FLAGS}


def main(argv: list[str] | None = None, prog: str = "python -m airflow_project.serving") -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv, prog)
    from airflow_project.serving.bounded_http import limits_from
    from airflow_project.serving.server import serve

    serve(args.model_uri, args.model_name, args.http_port, args.tracking_uri,
          max_body_bytes=args.max_body_bytes, server_options=server_options(args), host=args.host,
          limits=limits_from(args))
    return 0
