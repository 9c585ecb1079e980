"""SLO check of a Locust run from its CSV stats (stdlib only).

`check(stats_csv, p95_ms)` reads `<prefix>_stats.csv` and fails when:
- no request was made,
- any request failed (Failure Count > 0 on any row),
- the p95 of any endpoint, or of all requests together ("Aggregated"), is above `p95_ms`.

`python -m loadtest.slo reports/loadtest_stats.csv --p95-ms 250` exits 1 on a breach.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class EndpointStats:
    name: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


@dataclass
class SLOResult:
    endpoints: list[EndpointStats]
    aggregated: EndpointStats | None
    p95_bound_ms: float
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [(f"{'endpoint':<28} {'requests':>9} {'failures':>8} {'rps':>8} "
                 f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}")]
        for s in [*self.endpoints, *([self.aggregated] if self.aggregated else [])]:
            lines.append(f"{s.name:<28} {s.requests:>9} {s.failures:>8} {s.rps:>8.1f} "
                         f"{s.p50_ms:>7.0f} {s.p95_ms:>7.0f} {s.p99_ms:>7.0f}")
        verdict = "SLO OK" if self.ok else "SLO FAILED: " + "; ".join(self.problems)
        return "\n".join([*lines, f"p95 bound {self.p95_bound_ms:.0f} ms -> {verdict}"])


def _num(row: dict[str, str], key: str) -> float:
    value = (row.get(key) or "").strip()
    if value in ("", "N/A"):
        return 0.0
    return float(value)


def read_stats(stats_csv: Path) -> tuple[list[EndpointStats], EndpointStats | None]:
    endpoints, aggregated = [], None
    with open(stats_csv, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            stats = EndpointStats(
                name=(row.get("Name") or "").strip(),
                requests=int(_num(row, "Request Count")),
                failures=int(_num(row, "Failure Count")),
                rps=_num(row, "Requests/s"),
                p50_ms=_num(row, "50%"),
                p95_ms=_num(row, "95%"),
                p99_ms=_num(row, "99%"),
            )
            if stats.name == "Aggregated":
                aggregated = stats
            else:
                endpoints.append(stats)
    return endpoints, aggregated


def check(stats_csv: Path | str, p95_ms: float) -> SLOResult:
    stats_csv = Path(stats_csv)
    if not stats_csv.exists():
        return SLOResult([], None, p95_ms, [f"{stats_csv} does not exist (did Locust run?)"])
    endpoints, aggregated = read_stats(stats_csv)
    result = SLOResult(endpoints, aggregated, p95_ms)
    total = aggregated.requests if aggregated else sum(e.requests for e in endpoints)
    if total == 0:
        result.problems.append("no requests were made")
    for s in [*endpoints, *([aggregated] if aggregated else [])]:
        if s.failures:
            result.problems.append(f"{s.name}: {s.failures} of {s.requests} requests failed")
        if s.requests and s.p95_ms > p95_ms:
            result.problems.append(f"{s.name}: p95 {s.p95_ms:.0f} ms > {p95_ms:.0f} ms")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.slo")
    parser.add_argument("stats_csv", type=Path)
    parser.add_argument("--p95-ms", type=float, required=True)
    args = parser.parse_args(argv)
    result = check(args.stats_csv, args.p95_ms)
    print(result.summary())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
