"""What keeps a mirror's shadow from costing the primary anything: the router's mirror mode
asks `ShadowGuard.admit()` before it sends a copy.

A fire-and-forget copy is free only while the shadow keeps up. A slow shadow makes copies
pile up (each an open connection, a task and its buffers in the router, work on the CPU
the primary shares), and a dead one costs a connection attempt, an exception and a log
line per request. So:

- at most `max_in_flight` copies are outstanding; a copy beyond that is dropped;
- after a transport failure (refused, reset, timeout) no copies are sent for a backoff,
  1 s doubling up to 30 s; then a single copy probes the shadow, and its success closes
  the breaker again;
- what was dropped and why is counted and reported at most every `report_every` seconds,
  not per request.

Istio's mirror behaves alike where it matters: Envoy sends shadow traffic with its own
connection limits and ignores its answers. `make bench` measures the effect (primary p99
with a healthy, a slow and a killed shadow; loadtest/README.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_IN_FLIGHT = 64
MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
REPORT_EVERY_S = 10.0


@dataclass
class ShadowGuard:
    max_in_flight: int = MAX_IN_FLIGHT
    min_backoff: float = MIN_BACKOFF_S
    max_backoff: float = MAX_BACKOFF_S
    report_every: float = REPORT_EVERY_S
    clock: Callable[[], float] = time.monotonic
    in_flight: int = 0
    backoff: float = 0.0  # > 0: the breaker has tripped; copies wait until `closed_until`
    closed_until: float = 0.0
    probing: bool = False
    counts: dict[str, int] = field(default_factory=lambda: {"sent": 0, "busy": 0, "breaker": 0,
                                                            "failed": 0, "answered_non_2xx": 0})
    _reported: float = 0.0

    def admit(self) -> bool:
        """Whether to send this copy now (then `done()` must follow)."""
        if self.in_flight >= self.max_in_flight:
            self.counts["busy"] += 1
            return False
        if self.backoff:
            if self.probing or self.clock() < self.closed_until:
                self.counts["breaker"] += 1
                return False
            self.probing = True  # half open: this copy tells whether the shadow is back
        self.in_flight += 1
        self.counts["sent"] += 1
        return True

    def done(self, *, reached: bool, ok: bool = True) -> float:
        """A copy ended: `reached` the shadow (any answer) or not (transport failure); `ok`
        for a 2xx answer. Returns the new backoff after a failure, else 0."""
        self.in_flight -= 1
        self.probing = False
        if reached:
            self.backoff = 0.0
            if not ok:
                self.counts["answered_non_2xx"] += 1
            return 0.0
        self.counts["failed"] += 1
        self.backoff = min(max(self.min_backoff, self.backoff * 2), self.max_backoff)
        self.closed_until = self.clock() + self.backoff
        return self.backoff

    def report(self) -> dict[str, int] | None:
        """The counts since the last report, when there is something and it is time."""
        now = self.clock()
        dropped = self.counts["busy"] + self.counts["breaker"] + self.counts["failed"] + self.counts["answered_non_2xx"]
        if not dropped or now - self._reported < self.report_every:
            return None
        self._reported = now
        counts, self.counts = self.counts, dict.fromkeys(self.counts, 0)
        return counts
