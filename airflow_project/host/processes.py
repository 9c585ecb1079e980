"""Process groups: start detached, check, stop.

Every process the platform starts leads a session (process group) of its own, so
stopping it means signalling that group and whatever it spawned into groups of their own.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable

import psutil


def alive(pid: int | None, must_contain: tuple[str, ...] = ()) -> bool:
    """Running (not a zombie) and, when given, its command line contains every string.

    Reaps `pid` first when it is an exited child of this process (e.g. a model server
    started under `dag.test()`), which would otherwise stay a zombie.
    """
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = " ".join(proc.cmdline())
    except (psutil.Error, OSError):
        return False
    return all(s in cmdline for s in must_contain)


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group led by `pid`, or `pid` alone when it leads none."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_process_groups(pids: Iterable[int], timeout: float = 15.0) -> list[int]:
    """SIGTERM each pid's process group and every descendant (task processes run in groups
    of their own); SIGKILL what is left after `timeout`. Waits for (and so reaps) our own
    children. Returns the pids that were running."""
    leaders: list[int] = []
    everything: list[psutil.Process] = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
        except psutil.Error:
            continue
        try:
            descendants = proc.children(recursive=True)
        except psutil.Error:
            descendants = []
        leaders.append(pid)
        everything += [proc, *descendants]
        signal_group(pid, signal.SIGTERM)
        for child in descendants:
            with contextlib.suppress(psutil.Error):
                child.terminate()
    _, alive_after = psutil.wait_procs(everything, timeout=timeout)
    for proc in alive_after:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    for pid in leaders:  # the groups' leftovers
        signal_group(pid, signal.SIGKILL)
    psutil.wait_procs(alive_after, timeout=5)
    return leaders
