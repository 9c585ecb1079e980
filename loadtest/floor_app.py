"""The HTTP floor: a bare ASGI app answering a constant JSON body, on uvicorn.

    python -m loadtest.floor_app --port P [--delay-ms D]

Same server stack as the KServe predictor (uvicorn, uvloop, httptools with one socket
write per response and bounded reads from `serving.bounded_http`, one process, no access log) but no
framework and no work: it reads the request body and answers a
constant V2-shaped JSON. Its throughput is what this machine's HTTP stack can do.

With `--delay-ms D` it answers each request D ms late (without using the CPU meanwhile):
the slow shadow of the mirroring benchmark (`loadtest.bench_mirror`).
"""

from __future__ import annotations

import argparse
import asyncio

BODY = (b'{"model_name":"floor","outputs":[{"name":"predictions","datatype":"FP64",'
        b'"shape":[1],"data":[1.0]}],"predictions":[1.0]}')
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
DELAY_S = 0.0


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more = message.get("more_body", False)
    if DELAY_S:
        await asyncio.sleep(DELAY_S)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from airflow_project.serving.bounded_http import http_protocol

    p = argparse.ArgumentParser(prog="python -m loadtest.floor_app")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--delay-ms", type=float, default=0.0, help="answer every request this late")
    args = p.parse_args(argv)
    global DELAY_S
    DELAY_S = args.delay_ms / 1000.0
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http=http_protocol(),
                access_log=False, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
