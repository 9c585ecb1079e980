"""ShadowGuard with an injected clock: copies in flight, the breaker, its probe, reports."""

from __future__ import annotations

from airflow_project.serving.shadow_guard import ShadowGuard


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_copies_in_flight_are_bounded() -> None:
    guard = ShadowGuard(max_in_flight=2, clock=Clock())
    assert [guard.admit() for _ in range(3)] == [True, True, False]
    guard.done(reached=True)
    assert guard.admit()
    assert guard.counts["busy"] == 1 and guard.counts["sent"] == 3


def test_a_failure_trips_the_breaker_and_one_probe_closes_it() -> None:
    clock = Clock()
    guard = ShadowGuard(clock=clock)
    assert guard.admit()
    assert guard.done(reached=False) == 1.0  # refused: no copies for 1 s
    assert not guard.admit()
    clock.now += 1.0
    assert guard.admit()  # the probe
    assert not guard.admit()  # only one probe at a time
    assert guard.done(reached=False) == 2.0  # still down: the backoff doubles
    clock.now += 1.5
    assert not guard.admit()
    clock.now += 0.5
    assert guard.admit()
    guard.done(reached=True, ok=False)  # an answer, even a 500, means the shadow is back
    assert guard.admit() and guard.admit()
    assert guard.counts["breaker"] == 3 and guard.counts["failed"] == 2 and guard.counts["answered_non_2xx"] == 1


def test_the_backoff_is_capped() -> None:
    guard = ShadowGuard(clock=Clock(), max_backoff=30.0)
    for _ in range(10):
        guard.probing = False
        guard.in_flight += 1
        backoff = guard.done(reached=False)
    assert backoff == 30.0


def test_reports_come_at_most_every_period_and_only_with_news() -> None:
    clock = Clock()
    guard = ShadowGuard(max_in_flight=1, clock=clock, report_every=10.0)
    assert guard.report() is None  # nothing dropped
    guard.admit()
    guard.admit()  # dropped: busy
    first = guard.report()
    assert first is not None and first["busy"] == 1 and first["sent"] == 1
    guard.admit()
    assert guard.report() is None  # too soon
    clock.now += 10.0
    assert guard.report()["busy"] == 1
    clock.now += 10.0
    assert guard.report() is None  # nothing new
