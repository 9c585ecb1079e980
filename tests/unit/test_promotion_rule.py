from airflow_project.registry import decide_promotion


def test_first_model_becomes_champion():
    assert decide_promotion(2.0, None, None) == (True, "promoted: no champion yet")


def test_strictly_better_mae_is_promoted():
    promoted, decision = decide_promotion(1.0, 1.5, "3")
    assert promoted and "champion v3" in decision


def test_equal_or_worse_mae_keeps_the_champion():
    assert decide_promotion(1.5, 1.5, "3")[0] is False
    promoted, decision = decide_promotion(2.0, 1.5, "3")
    assert not promoted and decision.startswith("kept champion v3")
