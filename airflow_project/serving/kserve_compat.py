"""Every place the predictor reaches into KServe's or uvicorn's internals, in one module.

They are written against the kserve and uvicorn versions in `WRITTEN_FOR`; `apply()`
refuses to run with others, so an upgrade fails at start-up (and in the unit tests) instead
of silently serving without one-write responses, the fast path or the 400s for bad binary
requests. After an upgrade, check each function here against the new source, then update
`WRITTEN_FOR`.
"""

from __future__ import annotations

import logging
import struct
from importlib import metadata
from types import ModuleType
from typing import Any

from airflow_project.serving.constants import DEFAULT_HOST

WRITTEN_FOR = {"kserve": "0.21", "uvicorn": "0.54"}
"""Distribution -> the major.minor release these adaptations were checked against."""

_APPLICATION: set[int] = set()  # ids of KServe apps whose routes are registered


class IncompatibleVersion(RuntimeError):
    """kserve or uvicorn is not the release the adaptations were written for."""


def check_versions(written_for: dict[str, str] = WRITTEN_FOR) -> None:
    for dist, release in written_for.items():
        found = metadata.version(dist)
        if found != release and not found.startswith(release + "."):
            raise IncompatibleVersion(
                f"airflow_project.serving.kserve_compat was written for {dist} {release}.x, but {dist} "
                f"{found} is installed: check its adaptations against {dist} {found}, then update WRITTEN_FOR"
            )


def apply(host: str = DEFAULT_HOST, limits: Any = None) -> None:
    """Check the versions, then have KServe's REST server listen on `host` with the
    predictor's HTTP protocol (one write per response, bounded reads)."""
    from kserve import model_server

    check_versions()
    use_predictor_http(model_server, host, limits)


def use_predictor_http(kserve_model_server: ModuleType | Any, host: str = DEFAULT_HOST, limits: Any = None) -> None:
    """Have the uvicorn server KServe builds listen on `host` and speak `bounded_http`'s protocol.

    `ModelServer.start()` creates its `RESTServer` (and with it the `uvicorn.Config`) from
    the name in `kserve.model_server`, so a subclass put there is the one place to choose
    uvicorn's HTTP protocol class and the listening address: `RESTServer.__init__` hard-codes
    `host="0.0.0.0"` (kserve/protocol/rest/server.py), and uvicorn's httptools protocol
    bounds nothing a client sends. The subclass also registers KServe's routes only once,
    since `build_app()` already has (`create_application`).
    """
    from kserve.protocol.rest.server import RESTServer

    from airflow_project.serving.bounded_http import http_protocol

    current = kserve_model_server.RESTServer
    if not getattr(current, "one_write", False):

        class PredictorRESTServer(RESTServer):
            one_write = True
            host = DEFAULT_HOST
            protocol: Any = http_protocol()

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.config.http = self.protocol
                self.config.host = self.host

            def create_application(self) -> None:
                from kserve import model_server

                if id(model_server.app) not in _APPLICATION:
                    super().create_application()
                    _APPLICATION.add(id(model_server.app))

        kserve_model_server.RESTServer = current = PredictorRESTServer
    current.host = host
    current.protocol = http_protocol(limits)


def create_application(server: Any) -> Any:
    """KServe's routes, middlewares and exception handlers on its module-level app (once);
    `ModelServer.start()` would otherwise only add them when it starts serving."""
    from kserve import model_server

    if not getattr(model_server.RESTServer, "one_write", False):
        apply()  # the RESTServer that registers them once (keeping the host and limits `apply` was given)
    model_server.RESTServer(
        "kserve.model_server:app", server.dataplane, server.model_repository_extension, 0
    ).create_application()
    return model_server.app


def drop_model_repository_routes(app: Any) -> int:
    """Remove KServe's model repository extension (`/v2/repository/...` index, load, unload)
    from its FastAPI app: served without authentication on the data plane, one POST to
    `.../unload` took the model out of service for good while the health endpoints kept
    answering 200 (`register_v2_endpoints` in kserve/protocol/rest/v2_endpoints.py). Those
    paths are then 404. Returns how many routes were removed."""
    routes = app.router.routes
    kept = [r for r in routes if not str(getattr(r, "path", "")).startswith("/v2/repository")]
    removed = len(routes) - len(kept)
    routes[:] = kept
    return removed


class _NoModelRepository:
    """Stands in for KServe's `ModelRepositoryExtension` (which its gRPC servicer also
    calls for RepositoryModelLoad/Unload): this predictor serves the one model it loaded."""

    @staticmethod
    async def load(model_name: str) -> Any:
        raise NotImplementedError(f"the model repository extension is not served (model {model_name!r})")

    unload = load

    @staticmethod
    async def index() -> Any:
        raise NotImplementedError("the model repository extension is not served")


def refuse_model_repository(server: Any) -> Any:
    """Replace the ModelServer's repository extension before any server is built from it."""
    server.model_repository_extension = _NoModelRepository()
    return server


def log_like_kserve(name: str) -> logging.Logger:
    """Write logger `name` (and its children) with KServe's handlers and format: without a
    handler of its own, a WARNING went out bare through logging's last resort and INFO not
    at all. The prediction log keeps its own stdout handler (it does not propagate)."""
    from kserve.logging import logger as kserve_logger

    target = logging.getLogger(name)
    if kserve_logger.handlers and not target.handlers:
        for handler in kserve_logger.handlers:
            target.addHandler(handler)
        target.setLevel(logging.INFO)
        target.propagate = False
    return target


def harden_dataplane(dataplane: Any) -> Any:
    """Make KServe's binary V2 decoding (`inference-header-content-length`) answer 400.

    `InferRequest.from_bytes` indexes the JSON header without checks, so a malformed
    binary request raises KeyError/TypeError (a 500). Wrap it on this dataplane instance.
    """
    from kserve.errors import InferenceError, InvalidInput

    original = dataplane.decode_inference_request

    def decode_inference_request(body: Any, headers: Any, model_name: str) -> Any:
        try:
            return original(body, headers, model_name)
        except InvalidInput:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, struct.error,
                InferenceError) as exc:
            raise InvalidInput(
                f"body: malformed binary inference request ({type(exc).__name__}: {exc})"
            ) from None

    dataplane.decode_inference_request = decode_inference_request
    return dataplane


def run(server: Any, app: Any, models: list[Any]) -> None:
    """`server.start(models)`, serving `app` instead of KServe's own, on the event loop
    KServe's `event_loop` setting asks for (blocking)."""
    from kserve import model_server

    # KServe hands this module global to uvicorn as the app (it registers its routes and
    # middlewares on `model_server.app` itself): serve the fast path in front of it.
    model_server.FASTAPI_APP_IMPORT_STRING = app
    use_uvloop(server.event_loop)
    server.start(models)


def use_uvloop(event_loop: str) -> bool:
    """Run KServe's server on uvloop when its `event_loop` setting allows it.

    `ModelServer.start()` runs its servers with `asyncio.run()`, which creates a loop from
    the current policy: uvicorn's `loop` setting ("auto" = uvloop when installed) is
    never applied, so KServe serves on the stdlib loop. Setting the policy first gives
    the loop KServe's setting asks for.
    """
    if event_loop not in ("auto", "uvloop"):
        return False
    try:
        import uvloop
    except ImportError:
        return False
    import asyncio

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # KServe's setup_event_loop() calls asyncio.get_event_loop() outside a running loop,
    # which uvloop's policy (unlike the stdlib's) does not answer with an implicit loop.
    asyncio.set_event_loop(asyncio.new_event_loop())
    return True


def skip_access_line(send: Any) -> None:
    """Ask uvicorn not to write its access line for this request.

    uvicorn decides per request, when the response starts, from the `access_log` attribute
    of the request's `RequestResponseCycle`, whose bound `send` the app is given. Under
    any other server (or a wrapped `send`) nothing changes and both lines are written.
    """
    cycle = getattr(send, "__self__", None)
    if getattr(cycle, "access_log", None) is True:
        cycle.access_log = False  # type: ignore[union-attr]
