"""Ports on 127.0.0.1 and readiness probes."""

from __future__ import annotations

import random
import socket
import urllib.error
import urllib.request
from http.client import HTTPException

import psutil

from airflow_project.host.processes import command_line

LOCALHOST = "127.0.0.1"
# Probes go straight to the address: a proxy from the environment must not answer for 127.0.0.1.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def free_port_range(span: int, low: int = 20000, high: int = 32000) -> int:
    """First port of `span` consecutive free ports below the ephemeral range (32768+),
    like the default serving port 8100: a port there is never a client socket's own
    port, so a readiness probe cannot connect to itself (TCP self-connect)."""
    for _ in range(200):
        base = random.randrange(low, high - span)
        if all(port_is_free(port) for port in range(base, base + span)):
            return base
    raise RuntimeError(f"no {span} consecutive free ports between {low} and {high}")


def port_owner(port: int) -> str:
    """`pid 123 (cmd ...)` of whoever listens on the port, when the OS tells us."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                try:
                    cmd = command_line(psutil.Process(conn.pid), 100)
                except psutil.Error:
                    cmd = "?"
                return f"pid {conn.pid} ({cmd})"
    except (psutil.Error, OSError):
        pass
    return ""


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` (or a descendant) listens on `port`. Check it before an HTTP
    probe of a port in the ephemeral range: connecting to a port nobody listens on can
    connect the socket to itself (TCP self-connect), which fakes an answer and keeps the
    port from the server."""
    try:
        proc = psutil.Process(pid)
        return any(
            c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
            for p in (proc, *proc.children(recursive=True))
            for c in p.net_connections(kind="tcp")
        )
    except (psutil.Error, OSError):
        return False


def tcp_ok(port: int, host: str = LOCALHOST, timeout: float = 1.0) -> bool:
    """Readiness of a service without an HTTP health endpoint: it accepts connections."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Readiness over HTTP: `GET url` answers 2xx (no proxy, no exception)."""
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, HTTPException, OSError, ValueError):
        return False
