"""The synthetic generator's format and the model's quality on it."""

from __future__ import annotations

import numpy as np
import pytest

from airflow_project.wachttijden import dataset, synthetic, training
from airflow_project.wachttijden.categories import ROAZ_REGIOS, SPECIALISMEN
from airflow_project.wachttijden.schema import FEATURES, TARGET


@pytest.fixture(scope="module")
def prepared():
    raw = synthetic.to_raw_bytes(synthetic.generate(synthetic.SyntheticConfig(rows=6000, seed=7)))
    cleaned, _ = dataset.fix_missing_values(dataset.read_raw(raw, "synthetic.csv"), "synthetic.csv")
    return cleaned


def test_generated_export_has_the_nza_format():
    data = synthetic.to_raw_bytes(synthetic.generate(synthetic.SyntheticConfig(rows=500, seed=1)))
    first_line = data.split(b"\r\n", 1)[0].decode("iso-8859-1")
    assert first_line.split(";") == list(synthetic.RAW_COLUMNS)
    assert b"\r\n" in data
    assert "Privékliniek Velsen".encode("iso-8859-1") in data
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")


def test_generator_is_seeded_and_has_missing_values():
    a = synthetic.generate(synthetic.SyntheticConfig(rows=2000, seed=3))
    b = synthetic.generate(synthetic.SyntheticConfig(rows=2000, seed=3))
    assert a.equals(b)
    assert (a[TARGET] == "").mean() == pytest.approx(0.03, abs=0.015)
    assert (a["TYPE_ZORGINSTELLING"] == "").any()
    assert set(a["SPECIALISME"]) <= set(SPECIALISMEN)
    assert set(a["ROAZ_REGIO"]) == set(ROAZ_REGIOS)
    assert "Orthopedie (305)" in SPECIALISMEN and len(ROAZ_REGIOS) == 11


def test_model_beats_the_mean_baseline_clearly(prepared):
    result = training.train(prepared)
    assert result.metrics["mae"] < 0.5 * result.metrics["baseline_mae"]
    assert result.metrics["r2"] > 0.7
    assert result.metrics["rmse"] >= result.metrics["mae"]


def test_split_is_seeded(prepared):
    config = training.TrainingConfig(random_seed=11)
    first = training.split(prepared, config)[1].index.tolist()
    assert first == training.split(prepared, config)[1].index.tolist()
    assert first != training.split(prepared, training.TrainingConfig(random_seed=12))[1].index.tolist()


@pytest.mark.parametrize("estimator", sorted(training.ESTIMATORS))
def test_every_estimator_trains_and_predicts_unknown_categories(prepared, estimator):
    result = training.train(prepared.head(1500), training.TrainingConfig(estimator=estimator))
    unseen = result.x_test.head(1).assign(SPECIALISME="Nieuw specialisme (999)")
    assert np.isfinite(result.pipeline.predict(unseen)).all()
    assert list(result.x_test.columns) == list(FEATURES)


def test_bad_training_config_names_the_problem():
    with pytest.raises(ValueError, match="unknown estimator 'svm'"):
        training.TrainingConfig(estimator="svm")
    with pytest.raises(ValueError, match="test_size must be between 0 and 1"):
        training.TrainingConfig(test_size=1.5)


def test_plot_is_a_png(prepared):
    result = training.train(prepared.head(1000))
    png = training.prediction_plot(result.y_test, result.predictions)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
