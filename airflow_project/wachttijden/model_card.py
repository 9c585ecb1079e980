"""The model card of a registered version: what it was trained on, how good it is, why it
was (not) promoted, what it is for and where it is wrong. Markdown, from plain values.

Two renderings of the same facts: the registry's model-version description (the MLflow UI
shows it as Markdown on the version's page; MLflow's SQL stores hold at most 5,000
characters there, so the description lists each feature's number of categories and its
rarest one) and the run artifact `model_card.md`, which lists every category with its rows.
The backtest section grows as later exports score the version; the description keeps the
newest rows of it, the metric `backtest_mae` keeps all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .schema import DEFAULT_TYPE_ZORGINSTELLING, FEATURES, MODEL_NAME, TARGET

DESCRIPTION_LIMIT = 5000
BACKTESTS_SHOWN = 10
_BACKTESTS_BEGIN = "<!-- backtests:begin -->"
_BACKTESTS_END = "<!-- backtests:end -->"
_NO_BACKTEST = "_None yet: a version is backtested on each later export, before training on it._"

INTENDED_USE = (
    "Estimates the waiting time in weeks that the NZa export would publish for a combination of "
    "type of wait, specialism, ROAZ region and type of institution: for planning and for "
    "comparing regions and specialisms. Not a prediction for a single patient or a single "
    "hospital (the institution itself is not a feature)."
)
VERSION_ORDER = (
    "Versions are ordered by the export date of their training data, not by when they were trained. "
    "A version trained on an export older than the champion's is a backfill: registered (tag `backfill`), "
    "but it moves no alias. Otherwise it becomes challenger (unless the challenger was trained on a newer "
    "export), and champion when its hold-out MAE beats the champion's on the same rows and the champion's "
    "latest backtest does not beat that MAE by more than the stated margin. Training again on identical "
    "data with the same configuration registers nothing."
)
KNOWN_LIMITS = (
    ("- **Unknown categories**: a value the model did not see in training (a new or renamed "
    "specialism, a new region) is encoded as all-zero by the one-hot encoder "
    "(`handle_unknown='ignore'`), so the prediction is the encoder's default for that feature: "
    "what the model learned for 'none of the known categories', not an estimate for the new one. "
    "The data checks report such categories before training (experiment `wachttijden-data`)."),
    ("- **Time**: trained on one export; waiting times move month to month. The section "
    "\"Backtests of this version\" above shows how it held on later exports it had not seen."),
    ("- **Granularity**: four categorical features only; two hospitals in one region with the "
    "same specialism get the same estimate."),
)


@dataclass(frozen=True)
class Backtest:
    """One export this version was scored on after training (it had not seen it)."""

    export: str
    day: str  # YYYY-MM-DD
    mae: float
    rows: int


@dataclass
class CardFacts:
    version: str
    run_id: str
    estimator: str
    training_data: str
    export_day: str | None
    rows: int
    n_train: int
    n_test: int
    category_counts: Mapping[str, Mapping[str, int]]
    metrics: Mapping[str, float]
    decision: str
    data_report: Mapping[str, Any] | None = None
    data_run: str | None = None
    backtests_before: Sequence[Mapping[str, Any]] = field(default_factory=list)


def _training_data(f: CardFacts) -> list[str]:
    lines = [f"- Export: `{f.training_data}`" + (f" (export date {f.export_day})" if f.export_day else "")]
    lines.append(f"- Rows: {f.rows:,} prepared rows, {f.n_train:,} to train and {f.n_test:,} held out (seeded split)")
    report = f.data_report or {}
    rows = report.get("rows")
    if rows:
        dropped = rows.get("dropped", {})
        lines.append(
            f"- Raw export: {rows.get('read', 0):,} rows, {rows.get('usable', 0):,} usable; dropped "
            f"{dropped.get('empty_target', 0):,} with an empty {TARGET}, "
            f"{dropped.get('target_not_a_number', 0):,} not a number, "
            f"{dropped.get('negative_target', 0):,} negative, {dropped.get('empty_feature', 0):,} with "
            f"an empty feature; {rows.get('filled_type_zorginstelling', 0):,} empty TYPE_ZORGINSTELLING "
            f"filled with {DEFAULT_TYPE_ZORGINSTELLING!r}"
        )
        gate = report.get("gate", "?")
        drift = report.get("drift")
        drift_text = "not measured" if drift is None else f"{drift:.3f} ({report.get('drift_column')})"
        override = f", overridden: {report.get('override')}" if report.get("override") else ""
        lines.append(f"- Data gate: {gate}{override}; drift (PSI) {drift_text}"
                     + (f"; data run `{f.data_run}`" if f.data_run else ""))
    else:
        lines.append("- Raw export and drop counts: not recorded (no data-check run for this input, "
                     "e.g. trained with `mlops train` from a local file)")
    return lines


def _features(f: CardFacts, full: bool) -> list[str]:
    lines = ["| feature | categories | rarest (rows) |", "| --- | ---: | --- |"]
    for feature in FEATURES:
        counts = f.category_counts.get(feature, {})
        rarest = min(counts.items(), key=lambda kv: (kv[1], kv[0])) if counts else ("-", 0)
        lines.append(f"| {feature} | {len(counts)} | {rarest[0]} ({rarest[1]:,}) |")
    if full:
        for feature in FEATURES:
            values = ", ".join(f"{name} ({n:,})" for name, n in f.category_counts.get(feature, {}).items())
            lines += ["", f"{feature}: {values}"]
    return lines


def _metrics(f: CardFacts) -> list[str]:
    m = f.metrics
    names = [k for k in ("mae", "rmse", "r2", "baseline_mae", "champion_mae") if k in m]
    lines = ["| " + " | ".join(names) + " |", "|" + " ---: |" * len(names),
             "| " + " | ".join(f"{m[k]:.3f}" for k in names) + " |"]
    lines.append("")
    lines.append("`baseline_mae`: a mean predictor on the same hold-out rows; `champion_mae`: the champion "
                 "at training time on the same hold-out rows.")
    if f.backtests_before:
        lines += ["", "Backtest on this export, before training on it (models that had not seen it):", ""]
        lines += [f"- v{b['version']} ({', '.join(b.get('aliases') or []) or 'no alias'}): "
                  f"backtest_mae {b['mae']:.3f} on {b['rows']:,} rows" for b in f.backtests_before]
    return lines


def render(facts: CardFacts, *, full: bool = False) -> str:
    f = facts
    lines = [
        f"# Model card: {MODEL_NAME} version {f.version}",
        "",
        (f"Estimator `{f.estimator}` after a one-hot encoder of the four features; target {TARGET} "
        f"(weeks). MLflow run `{f.run_id}`."),
        "",
        "## Training data",
        *_training_data(f),
        "",
        "## Features",
        *_features(f, full),
        "",
        "## Hold-out metrics",
        *_metrics(f),
        "",
        "## Promotion decision",
        f.decision,
        "",
        VERSION_ORDER,
        "",
        "## Backtests of this version (later exports, unseen)",
        _BACKTESTS_BEGIN,
        _NO_BACKTEST,
        _BACKTESTS_END,
        "",
        "## Intended use",
        INTENDED_USE,
        "",
        "## Known limits",
        *KNOWN_LIMITS,
    ]
    if full:
        return "\n".join(lines) + "\n"
    lines += ["", "The full card (every category with its rows) is the run's artifact `model_card.md`."]
    return fit("\n".join(lines) + "\n")


_ROW = re.compile(r"^\| (\d{4}-\d{2}-\d{2}) \| `([^`]*)` \| ([0-9.]+) \| ([0-9,]+) \|$")


def _backtest_rows(card: str) -> dict[tuple[str, str], Backtest]:
    begin, end = card.find(_BACKTESTS_BEGIN), card.find(_BACKTESTS_END)
    if begin < 0 or end < 0:
        return {}
    rows = {}
    for line in card[begin:end].splitlines():
        match = _ROW.match(line)
        if match:
            day, export, mae, n = match.groups()
            rows[(day, export)] = Backtest(export, day, float(mae), int(n.replace(",", "")))
    return rows


def with_backtest(card: str, backtest: Backtest, *, shown: int = BACKTESTS_SHOWN) -> str:
    """The card with this backtest in its backtest table (replacing one of the same export;
    the newest `shown` rows kept). A card without the section gets it appended."""
    rows = _backtest_rows(card)
    rows[(backtest.day, backtest.export)] = backtest
    newest = sorted(rows.values(), key=lambda b: (b.day, b.export))[-shown:]
    table = "\n".join([
        _BACKTESTS_BEGIN,
        "| export date | export | backtest_mae | rows |",
        "| --- | --- | ---: | ---: |",
        *(f"| {b.day} | `{b.export}` | {b.mae:.4f} | {b.rows:,} |" for b in newest),
        _BACKTESTS_END,
    ])
    begin, end = card.find(_BACKTESTS_BEGIN), card.find(_BACKTESTS_END)
    if begin < 0 or end < 0:
        return fit(card.rstrip("\n") + "\n\n## Backtests of this version (later exports, unseen)\n" + table + "\n")
    return fit(card[:begin] + table + card[end + len(_BACKTESTS_END):])


def fit(card: str, limit: int = DESCRIPTION_LIMIT) -> str:
    """The card within MLflow's description limit (cut at a line, with a note)."""
    if len(card) <= limit:
        return card
    note = "\n\n_(cut to fit the registry's description limit; see the run's model_card.md)_\n"
    return card[: card.rfind("\n", 0, limit - len(note))] + note
