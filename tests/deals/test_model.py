"""DealWinModel: determinism, SHAP additivity, out-of-sample calibration, sufficiency gate,
and that training and scoring do not move when the future changes."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from salesml.config import DealsSettings
from salesml.deals.model import DealWinModel, InsufficientDataError, fit_calibrator
from salesml.deals.scoring import score_open_deals
from salesml.deals.training import TrainingResult, fit_deal_win, make_model
from tests.deals.conftest import AS_OF, cut_at, fast_deal_settings, scramble_future


def test_shap_contributions_add_up_to_the_raw_score(trained: TrainingResult) -> None:
    features = trained.features.head(500)
    contrib = trained.model.contributions(features)
    assert contrib.shape == (500, len(trained.model.feature_names_) + 1)
    raw = trained.model.predict_raw(features)
    assert np.max(np.abs(contrib.sum(axis=1) - raw)) < 1e-6
    p = trained.model.predict_proba(features)
    assert np.allclose(p.sum(axis=1), 1.0)
    assert ((p > 0) & (p < 1)).all()


def test_fit_is_deterministic_given_a_seed(
    trained: TrainingResult, fast_settings: DealsSettings
) -> None:
    again = make_model(trained.spec, fast_settings).fit(
        trained.features, trained.snapshots["label"], trained.snapshots["closed_at"]
    )
    sample = trained.features.head(300)
    assert np.array_equal(again.predict_proba(sample), trained.model.predict_proba(sample))
    assert again.best_iteration_ == trained.model.best_iteration_


def test_calibration_is_fitted_on_later_deals_the_booster_never_saw(
    trained: TrainingResult,
) -> None:
    model, snaps = trained.model, trained.snapshots
    slices = pl.Series("slice", model.slice_of_)
    labelled = snaps.with_columns(slices)
    train_deals = set(labelled.filter(pl.col("slice") == 0)["deal_id"])
    calibration = labelled.filter(pl.col("slice") == 2)
    assert train_deals.isdisjoint(set(calibration["deal_id"]))
    first_calibration = calibration["closed_at"].dt.epoch("us").min()
    last_earlier = labelled.filter(pl.col("slice") <= 1)["closed_at"].dt.epoch("us").max()
    assert isinstance(first_calibration, int) and isinstance(last_earlier, int)
    assert first_calibration > last_earlier
    assert model.slices_.calibration_rows == calibration.height > 0
    # the calibrator is exactly the one fitted on the calibration slice's raw scores
    raw = model.predict_raw(trained.features.filter(slices == 2))
    refit = fit_calibrator(model.calibration, raw, calibration["label"].to_numpy())
    grid = np.linspace(-4, 4, 50)
    assert np.allclose(refit.predict(grid), model.calibrator_.predict(grid))
    # ... and not one fitted on the training rows
    raw_train = model.predict_raw(trained.features.filter(slices == 0))
    on_train = fit_calibrator(
        model.calibration, raw_train, labelled.filter(pl.col("slice") == 0)["label"].to_numpy()
    )
    assert not np.allclose(on_train.predict(grid), model.calibrator_.predict(grid))


def test_platt_calibration_is_supported(trained: TrainingResult) -> None:
    settings = fast_deal_settings(calibration="platt")
    model = make_model(trained.spec, settings).fit(
        trained.features, trained.snapshots["label"], trained.snapshots["closed_at"]
    )
    p = model.predict_proba(trained.features.head(50))[:, 1]
    assert ((p > 0) & (p < 1)).all()


def test_training_refuses_too_few_won_or_lost_deals(small_world: dict[str, pl.DataFrame]) -> None:
    settings = fast_deal_settings(min_won=100_000)
    with pytest.raises(InsufficientDataError, match=r"need at least 100000 won"):
        fit_deal_win(small_world, AS_OF, settings)


def test_categorical_vocabulary_comes_from_training_rows(trained: TrainingResult) -> None:
    model = trained.model
    assert "product" in model.categories_
    unseen = trained.features.head(3).with_columns(pl.lit("brand-new product").alias("product"))
    p = model.predict_proba(unseen)
    assert np.isfinite(p).all()


@pytest.mark.parametrize("future", [cut_at, scramble_future])
def test_model_and_scores_do_not_move_when_the_future_changes(
    small_world: dict[str, pl.DataFrame],
    trained: TrainingResult,
    fast_settings: DealsSettings,
    future: object,
) -> None:
    changed = future(small_world, AS_OF)  # type: ignore[operator]
    other = fit_deal_win(changed, AS_OF, fast_settings)
    assert_frame_equal(other.features, trained.features)
    sample = trained.features.head(400)
    assert np.array_equal(other.model.predict_proba(sample), trained.model.predict_proba(sample))
    kwargs = {"min_open_days": fast_settings.min_open_days, "rules": fast_settings.rules}
    before = score_open_deals(trained.model, small_world, AS_OF, **kwargs)  # type: ignore[arg-type]
    after = score_open_deals(other.model, changed, AS_OF, **kwargs)  # type: ignore[arg-type]
    assert before.scores.height > 0
    assert_frame_equal(before.scores, after.scores)
    assert_frame_equal(before.factors, after.factors)
    assert_frame_equal(before.forecast, after.forecast)


def test_model_is_sklearn_shaped() -> None:
    model = DealWinModel(num_leaves=3, seed=1)
    assert model.num_leaves == 3
    assert not hasattr(model, "booster_")
    assert model.get_params()["seed"] == 1
