import datetime as dt

import pytest

from airflow_project.backtest import not_unseen
from airflow_project.registry import (
    BACKTEST_MARGIN,
    ChampionBacktest,
    decide_promotion,
    export_step,
)


def test_first_model_becomes_champion():
    assert decide_promotion(2.0, None, None) == (True, "promoted: no champion yet")


def test_strictly_better_mae_is_promoted():
    promoted, decision = decide_promotion(1.0, 1.5, "3")
    assert promoted and "champion v3" in decision
    assert "v3 has no backtest yet" in decision and "margin 10%" in decision


def test_equal_or_worse_mae_keeps_the_champion():
    assert decide_promotion(1.5, 1.5, "3")[0] is False
    promoted, decision = decide_promotion(2.0, 1.5, "3")
    assert not promoted and decision.startswith("kept champion v3")


def test_champion_whose_backtest_beats_the_new_holdout_by_more_than_the_margin_stays():
    backtest = ChampionBacktest(mae=0.85, step=20240308)
    promoted, decision = decide_promotion(1.0, 1.2, "3", backtest)
    assert not promoted
    assert decision.startswith("kept champion v3: hold-out mae 1.0000 < champion v3's 1.2000 on the same rows, "
                               "but v3's backtest mae 0.8500 on the unseen export of 2024-03-08 beats it by "
                               "more than 10% (0.8500 < 0.9000)")
    assert "rule: promote when" in decision


def test_backtest_within_the_margin_does_not_block():
    promoted, decision = decide_promotion(1.0, 1.2, "3", ChampionBacktest(mae=0.92, step=20240308))
    assert promoted and "does not beat it by more than 10% (0.9200 >= 0.9000)" in decision
    assert decide_promotion(1.0, 1.2, "3", ChampionBacktest(mae=0.92, step=20240308), margin=0.05)[0] is False


def test_the_margin_is_relative_and_stated():
    assert BACKTEST_MARGIN == pytest.approx(0.10)
    bound = 2.0 * (1 - BACKTEST_MARGIN)
    assert decide_promotion(2.0, 3.0, "1", ChampionBacktest(bound + 1e-6, 20240101))[0] is True
    assert decide_promotion(2.0, 3.0, "1", ChampionBacktest(bound - 1e-6, 20240101))[0] is False


def test_backtest_step_is_the_export_date():
    assert export_step(dt.date(2024, 3, 8)) == 20240308
    assert ChampionBacktest(1.0, 20241231).day == "2024-12-31"


def test_a_model_is_backtested_only_on_exports_after_its_own():
    day = dt.date(2024, 3, 8)
    export = "preprocessed/wachttijden/2024/03/08/wachttijden.csv"
    assert not_unseen("preprocessed/wachttijden/2024/03/07/wachttijden.csv", export, day) is None
    assert not_unseen(export, export, day) == "trained on this export"
    assert not_unseen("preprocessed/wachttijden/2024/04/01/wachttijden.csv", export, day) == (
        "trained on the export of 2024-04-01, not an earlier one")
    assert "has no export date" in not_unseen("/home/me/prepared.csv", export, day)


def _placed(new, champion, challenger=None):
    from types import SimpleNamespace

    from airflow_project.registry import Lineage

    day = lambda text: None if text is None else dt.date.fromisoformat(text)
    return Lineage(export_day=day(new), champion=SimpleNamespace(version="1"), champion_day=day(champion),
                   challenger=SimpleNamespace(version="2"), challenger_day=day(challenger or champion))


def test_a_version_of_an_older_export_than_the_champions_is_a_backfill_that_moves_no_alias():
    placed = _placed("2024-03-09", "2026-12-03")
    assert placed.backfill and not placed.takes_challenger
    assert placed.backfill_decision().startswith(
        "backfill: trained on the export of 2024-03-09, older than champion v1's export of 2026-12-03; "
        "registered, no alias moved [rule: versions are ordered by the export date")


def test_the_same_or_a_newer_export_takes_the_challenger_alias():
    assert not _placed("2026-12-03", "2026-12-03").backfill
    assert _placed("2026-12-03", "2026-12-03").takes_challenger
    assert _placed("2026-12-04", "2026-12-03").takes_challenger


def test_between_champion_and_challenger_the_challenger_stays():
    placed = _placed("2026-02-01", "2026-01-01", challenger="2026-03-01")
    assert not placed.backfill and not placed.takes_challenger
    assert "challenger stays v2, trained on the newer export of 2026-03-01" in placed.challenger_note()


def test_without_an_export_date_there_is_no_order_and_no_backfill():
    assert not _placed(None, "2026-12-03").backfill and _placed(None, "2026-12-03").takes_challenger
    assert not _placed("2024-03-09", None).backfill


def test_a_versions_export_date_is_its_tag_else_the_date_in_its_training_input():
    from types import SimpleNamespace

    from airflow_project import lineage

    runs = {"r1": "preprocessed/wachttijden/2026/12/03/wachttijden.csv", "r2": "/home/me/prepared.csv"}
    client = SimpleNamespace(get_run=lambda run_id: SimpleNamespace(data=SimpleNamespace(
        params={"input": runs.get(run_id, "")})))
    tagged = SimpleNamespace(version="4", run_id="r2", tags={"export_date": "2024-03-09"})
    from_input = SimpleNamespace(version="1", run_id="r1", tags={})
    undated = SimpleNamespace(version="5", run_id="r2", tags={})
    assert lineage.version_export_date(client, tagged) == dt.date(2024, 3, 9)
    assert lineage.version_export_date(client, from_input) == dt.date(2026, 12, 3)
    assert lineage.version_export_date(client, undated) is None
    # newest export first, then the higher number; undated versions last
    assert [mv.version for mv in lineage.newest_first(client, [tagged, undated, from_input])] == ["1", "4", "5"]
