"""Process groups: start detached, check, stop, and find what a crashed leader left behind.

Every process the platform starts leads a session (process group) of its own, so
stopping it means signalling that group and whatever it spawned into groups of their own.
A leader killed with SIGKILL (OOM killer, crash) cannot pass the signal on: its children
(MLflow's uvicorn worker, for one) live on in its group and keep its port. They are found
by the group id the platform recorded: Linux does not hand out a pid while a process group
of that id still has members, so processes in a recorded group whose leader is gone are
what is left of that group, never strangers (see `group_members`).
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


def command_line(proc: psutil.Process, limit: int = 160) -> str:
    """A process's command line on one line, cut to `limit` characters (`?` if unreadable)."""
    try:
        cmd = " ".join(" ".join(proc.cmdline()).split())
    except (psutil.Error, OSError):
        return "?"
    return cmd[:limit - 1] + "…" if len(cmd) > limit else cmd


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group led by `pid`, or `pid` alone when it leads none."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_members(pgid: int, started_after: float | None = None) -> list[psutil.Process]:
    """Live processes (zombies excluded) of process group `pgid`.

    `started_after`: the recorded leader's start time; members started before it cannot
    belong to that group (2 s tolerance, like the pid files' identity check).
    """
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) != pgid or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if started_after is not None and proc.create_time() < started_after - 2.0:
                continue
        except (psutil.Error, OSError):
            continue
        members.append(proc)
    return members


def orphaned_members(pgid: int, leader_started: float | None) -> list[psutil.Process]:
    """What is left of a recorded group whose leader (pid `pgid`) is gone: its other members.

    Empty when a live process has the pid `pgid`: then either the leader still runs (not
    orphaned) or the number was reused after the whole group had ended (not ours)."""
    if alive(pgid):
        return []
    return group_members(pgid, leader_started)


def stop_orphaned_group(pgid: int, members: Iterable[psutil.Process], timeout: float = 15.0) -> list[int]:
    """SIGTERM a leaderless group (`orphaned_members`), SIGKILL what is left after `timeout`.
    Returns the pids that were running."""
    procs = list(members)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    _, left = psutil.wait_procs(procs, timeout=timeout)
    if left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        psutil.wait_procs(left, timeout=5)
    return [proc.pid for proc in procs]


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
        # members that are no descendants: children of a child that died (reparented)
        known = {proc.pid, *(d.pid for d in descendants)}
        strays = [p for p in group_members(pid, proc.create_time()) if p.pid not in known]
        everything += [proc, *descendants, *strays]
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
