"""The model card from plain values: its sections, the registry's size limit, backtest rows."""

from __future__ import annotations

from airflow_project.wachttijden import model_card
from airflow_project.wachttijden.categories import ROAZ_REGIOS, SPECIALISMEN

REPORT = {"rows": {"read": 1000, "usable": 950, "filled_type_zorginstelling": 40,
                   "dropped": {"empty_target": 20, "target_not_a_number": 20, "negative_target": 5,
                               "empty_feature": 5}},
          "gate": "passed", "drift": 0.012, "drift_column": "SPECIALISME", "override": None}


def _facts(**overrides) -> model_card.CardFacts:
    facts = {
        "version": "4", "run_id": "abc123", "estimator": "decision_tree",
        "training_data": "preprocessed/wachttijden/2024/03/08/wachttijden.csv", "export_day": "2024-03-08",
        "rows": 950, "n_train": 760, "n_test": 190,
        "category_counts": {"TYPE_WACHTTIJD": {"Behandeling": 500, "Diagnostiek": 450},
                         "SPECIALISME": {s: 50 for s in SPECIALISMEN},
                         "ROAZ_REGIO": {r: 80 + i for i, r in enumerate(ROAZ_REGIOS)},
                         "TYPE_ZORGINSTELLING": {"Ziekenhuis": 700, "Kliniek": 250}},
        "metrics": {"mae": 0.81, "rmse": 1.02, "r2": 0.93, "baseline_mae": 3.1, "champion_mae": 0.85},
        "decision": "promoted: hold-out mae 0.8100 < champion v3's 0.8500 on the same rows",
        "data_report": REPORT, "data_run": "run9",
        "backtests_before": [{"version": "3", "aliases": ["champion"], "mae": 0.84, "rows": 950}],
    }
    facts.update(overrides)
    return model_card.CardFacts(**facts)


def test_card_has_every_section_the_issue_asks_for():
    card = model_card.render(_facts())
    for heading in ("## Training data", "## Features", "## Hold-out metrics", "## Promotion decision",
                    "## Backtests of this version", "## Intended use", "## Known limits"):
        assert heading in card
    assert "(export date 2024-03-08)" in card
    assert "1,000 rows, 950 usable; dropped 20 with an empty WACHTTIJD, 20 not a number, 5 negative" in card
    assert "| SPECIALISME | 19 |" in card
    assert f"| ROAZ_REGIO | 11 | {ROAZ_REGIOS[0]} (80) |" in card
    assert "| 0.810 | 1.020 | 0.930 | 3.100 | 0.850 |" in card
    assert "- v3 (champion): backtest_mae 0.840 on 950 rows" in card
    assert "promoted: hold-out mae 0.8100" in card
    assert "handle_unknown='ignore'" in card
    assert len(card) <= model_card.DESCRIPTION_LIMIT


def test_full_card_lists_every_category_and_is_not_cut():
    full = model_card.render(_facts(), full=True)
    assert all(f"{s} (50)" in full for s in SPECIALISMEN)
    long = model_card.render(_facts(category_counts={"SPECIALISME": {f"s{i}" * 20: i for i in range(400)}}),
                             full=True)
    assert len(long) > model_card.DESCRIPTION_LIMIT and "cut to fit" not in long


def test_card_without_data_report_says_so():
    card = model_card.render(_facts(data_report=None, data_run=None, backtests_before=[]))
    assert "not recorded (no data-check run for this input" in card
    assert "Backtest on this export" not in card


def test_backtests_are_added_replaced_and_the_newest_kept():
    card = model_card.render(_facts())
    assert "None yet" in card
    b = model_card.Backtest
    card = model_card.with_backtest(card, b("preprocessed/a.csv", "2024-04-01", 0.9, 900))
    card = model_card.with_backtest(card, b("preprocessed/b.csv", "2024-05-01", 0.95, 910))
    card = model_card.with_backtest(card, b("preprocessed/a.csv", "2024-04-01", 0.91, 900))  # re-run
    assert "None yet" not in card
    assert card.count("| 2024-04-01 | `preprocessed/a.csv` | 0.9100 | 900 |") == 1
    assert "| 2024-05-01 | `preprocessed/b.csv` | 0.9500 | 910 |" in card
    assert card.index("2024-04-01 |") < card.index("2024-05-01 |")
    for month in range(1, 13):
        card = model_card.with_backtest(card, b(f"e{month}", f"2025-{month:02d}-01", 1.0, 1), shown=10)
    assert "2024-04-01" not in card and "2025-03-01" in card and "2025-02-01" not in card
    assert "## Known limits" in card  # the rest of the card is kept


def test_a_card_from_elsewhere_gets_the_section_and_everything_fits():
    card = model_card.with_backtest("a description by hand", model_card.Backtest("e", "2024-01-01", 1.0, 5))
    assert card.startswith("a description by hand") and "| 2024-01-01 | `e` | 1.0000 | 5 |" in card
    cut = model_card.fit("line\n" * 2000)
    assert len(cut) <= model_card.DESCRIPTION_LIMIT and "cut to fit" in cut
