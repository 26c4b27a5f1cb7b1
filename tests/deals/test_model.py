"""DealWinModel: determinism, SHAP additivity, out-of-sample calibration, sufficiency gate,
and that training and scoring do not move when the future changes."""

from __future__ import annotations

import pickle

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sklearn.base import clone

from salesml.config import DealsSettings
from salesml.deals.model import DealWinModel, InsufficientDataError, fit_calibrator
from salesml.deals.scoring import score_open_deals
from salesml.deals.training import TrainingResult, fit_deal_win, make_model
from tests.deals.conftest import AS_OF, cut_at, fast_deal_settings, scramble_future
from tests.pickling import PickledByOlderRelease


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
        trained.features,
        trained.snapshots["label"],
        trained.in_holdout,
        trained.snapshots["deal_id"],
    )
    sample = trained.features.head(300)
    assert np.array_equal(again.predict_proba(sample), trained.model.predict_proba(sample))
    assert again.best_iteration_ == trained.model.best_iteration_


def test_honest_split_no_holdout_snapshot_predates_a_training_label(
    trained: TrainingResult, fast_settings: DealsSettings
) -> None:
    snaps, in_holdout = trained.snapshots, trained.in_holdout
    holdout, training = snaps.filter(in_holdout), snaps.filter(~in_holdout)
    assert holdout.height > 0 and training.height > 0
    first_holdout = holdout["snapshot_at"].min()
    assert first_holdout is not None
    assert (training["label_at"] <= first_holdout).all()
    # the holdout is the latest snapshots with full follow-up at as_of
    assert (holdout["label_at"] <= AS_OF).all()
    assert holdout["snapshot_at"].max() == snaps["snapshot_at"].max()
    span = holdout["snapshot_at"].max() - first_holdout  # type: ignore[operator]
    assert span.days < fast_settings.holdout_days


def test_calibrator_is_fitted_on_the_holdout_the_booster_never_saw(
    trained: TrainingResult,
) -> None:
    model, in_holdout = trained.model, trained.in_holdout
    assert model.slices_.holdout_rows == int(in_holdout.sum())
    raw = model.predict_raw(trained.features.filter(in_holdout))
    labels = trained.snapshots.filter(in_holdout)["label"].to_numpy()
    refit = fit_calibrator(model.calibration, raw, labels)
    grid = np.linspace(-4, 4, 50)
    assert np.allclose(refit.predict(grid), model.calibrator_.predict(grid))
    # reported metrics are out of fold: they differ from the in-sample calibrated holdout
    in_sample = model.calibrate(raw)
    assert not np.allclose(in_sample, model.oof_probability_)
    assert trained.metrics["rows"] == len(labels)


def test_reported_brier_comes_with_the_chance_spread_of_one_as_ofs_open_deals(
    trained: TrainingResult, small_world: dict[str, pl.DataFrame]
) -> None:
    """The realised Brier of one as_of's open deals is one draw: training reports its standard
    error around the holdout Brier from what is known at as_of (open deals, holdout spread)."""
    from salesml.deals.snapshots import deals_known_at
    from salesml.deals.training import open_deal_noise

    m = trained.metrics
    known = deals_known_at(small_world["deals"], AS_OF)
    assert m["open_deals"] == known.filter(pl.col("closed_at").is_null()).height > 0
    error = (trained.holdout["win_probability"] - trained.holdout["label"]) ** 2
    one_cross_section = float(error.std()) / np.sqrt(m["open_deals"])  # type: ignore[arg-type]
    assert one_cross_section < m["brier_open_se"] < 3 * one_cross_section
    # four times the open deals at as_of: only the holdout's own uncertainty is left larger
    wider = open_deal_noise(
        trained.holdout,
        trained.holdout["win_probability"].to_numpy(),
        pl.concat([small_world["deals"]] * 4).with_columns(
            pl.col("deal_id") + pl.int_range(pl.len()).cast(pl.String)
        ),
        AS_OF,
        0.0,
    )
    assert wider["open_deals"] == 4 * m["open_deals"]
    assert wider["brier_open_se"] < m["brier_open_se"]


def test_platt_calibration_is_supported(trained: TrainingResult) -> None:
    settings = fast_deal_settings(model={"calibration": "platt"})
    model = make_model(trained.spec, settings).fit(
        trained.features,
        trained.snapshots["label"],
        trained.in_holdout,
        trained.snapshots["deal_id"],
    )
    p = model.predict_proba(trained.features.head(50))[:, 1]
    assert ((p > 0) & (p < 1)).all()


def test_training_refuses_too_few_won_or_lost_deals(small_world: dict[str, pl.DataFrame]) -> None:
    settings = fast_deal_settings(min_won=100_000)
    with pytest.raises(InsufficientDataError, match=r"need at least 100000 and"):
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
    kwargs = {"min_open_days": fast_settings.min_open_days, "rules": fast_settings.health.rules}
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


def test_clone_round_trip_keeps_every_hyper_parameter(trained: TrainingResult) -> None:
    model = trained.model
    copy = clone(model)
    assert type(copy) is DealWinModel and not hasattr(copy, "booster_")
    assert copy.get_params() == model.get_params()
    assert copy.feature_spec == model.feature_spec and copy.feature_spec is not model.feature_spec
    assert set(model.get_params()) >= {"feature_spec", "num_threads", "label_horizon_days"}
    assert "health_bands" not in model.get_params()  # policy, not model (scoring applies it)
    tuned = clone(model).set_params(num_leaves=4, calibration="platt")
    assert (tuned.num_leaves, tuned.calibration) == (4, "platt")
    assert model.num_leaves != 4  # the original is untouched
    assert model.tracking_params() == {
        k: v for k, v in model.get_params().items() if k not in ("feature_spec", "num_threads")
    }


def test_defaults_equal_the_config_defaults(trained: TrainingResult) -> None:
    """One set of defaults: a model built from default settings equals `DealWinModel()` in
    every hyper-parameter the settings decide."""
    from_config = make_model(trained.spec, DealsSettings()).get_params()
    defaults = DealWinModel().get_params()
    own = ("feature_spec", "label_horizon_days")  # data, not defaults
    assert {k: v for k, v in defaults.items() if k not in own} == {
        k: v for k, v in from_config.items() if k not in own
    }


@pytest.mark.parametrize("with_bands", [False, True])
def test_models_pickled_by_older_releases_still_load(
    trained: TrainingResult, with_bands: bool
) -> None:
    """Before BaseEstimator, and (with_bands) when the health bands travelled with the model:
    it loads, predicts alike, and the bands are dropped (scoring takes them from settings)."""
    state = {k: v for k, v in vars(trained.model).items() if k != "_sklearn_version"}
    if with_bands:
        state["health_bands"] = {"red_below": 0.9, "green_at_or_above": 0.95}
    old = pickle.loads(pickle.dumps(PickledByOlderRelease(DealWinModel, state)))
    assert type(old) is DealWinModel and not hasattr(old, "health_bands")
    sample = trained.features.head(200)
    assert np.array_equal(old.predict_proba(sample), trained.model.predict_proba(sample))
    assert old.get_params() == trained.model.get_params()
    assert clone(old).get_params() == trained.model.get_params()


def test_from_settings_reads_every_hyper_parameter_from_the_settings(
    trained: TrainingResult,
) -> None:
    settings = DealsSettings(
        label_horizon_days=30, model={"num_leaves": 7, "calibration": "platt", "seed": 5}
    )
    model = DealWinModel.from_settings(settings, feature_spec=trained.spec)
    params = model.get_params()
    assert params["feature_spec"] is trained.spec
    expected = {**settings.model.model_dump(), "label_horizon_days": settings.label_horizon_days}
    assert all(params[k] == expected[k] for k in params if k != "feature_spec")
    assert (model.num_leaves, model.calibration, model.label_horizon_days) == (7, "platt", 30)
    with pytest.raises(ValueError, match="feature_spec"):  # data, not settings: must be given
        DealWinModel.from_settings(settings)


def test_static_logit_baseline_is_unpenalised_and_unseen_levels_are_reference() -> None:
    # product alone varies: the maximum-likelihood fit predicts each product's win rate
    # (a penalised fit would shrink them towards the overall rate)
    from salesml.deals.baselines import StaticLogitBaseline

    product = ["a"] * 40 + ["b"] * 40 + ["c"] * 20
    won = [1] * 10 + [0] * 30 + [1] * 30 + [0] * 10 + [1] * 19 + [0]
    train = pl.DataFrame({"amount": [1000.0] * 100, "product": product, "region": ["N"] * 100})
    baseline = StaticLogitBaseline().fit(train, np.array(won))
    test = pl.DataFrame(
        {"amount": [1000.0] * 5, "product": ["a", "b", "c", "zzz", None], "region": ["N"] * 5}
    )
    got = baseline.predict(test)
    assert got == pytest.approx([0.25, 0.75, 0.95, 0.25, 0.25], abs=1e-4)
    constant = StaticLogitBaseline().fit(train, np.ones(100)).predict(test)
    assert constant == pytest.approx(np.full(5, 1 - 1e-6))
