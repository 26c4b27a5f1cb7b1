"""The demand model: ordered quantiles, calibrated coverage, SHAP in units that add up."""

from __future__ import annotations

import pickle

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from salesml import metrics
from salesml.demand.model import Calibration, DemandModel, nb_quantiles, to_unit_contributions
from tests.pickling import PickledByOlderRelease


@settings(max_examples=60, deadline=None)
@given(
    means=st.lists(st.floats(min_value=0.0, max_value=500.0), min_size=1, max_size=30),
    inv_size=st.floats(min_value=1e-3, max_value=5.0),
    lower=st.floats(min_value=1e-3, max_value=0.49),
)
def test_quantiles_are_ordered_and_non_negative(
    means: list[float], inv_size: float, lower: float
) -> None:
    p10, p50, p90 = nb_quantiles(np.array(means), inv_size, (lower, 0.5, 1.0 - lower))
    assert np.all(p10 >= 0)
    assert np.all(p10 <= p50 + 1e-12)
    assert np.all(p50 <= p90 + 1e-12)


def test_quantiles_grow_with_the_mean() -> None:
    means = np.linspace(0.01, 40, 200)
    _, p50, p90 = nb_quantiles(means, 0.3, (0.1, 0.5, 0.9))
    assert np.all(np.diff(p50) >= -1e-9) and np.all(np.diff(p90) >= -1e-9)


def test_calibration_reaches_the_target_coverage_on_held_out_counts() -> None:
    rng = np.random.default_rng(0)
    mean = rng.gamma(0.7, 1.0, 40_000)
    size = 2.0  # true 1/size = 0.5
    actual = rng.negative_binomial(size, size / (size + mean)).astype(float)
    model = DemandModel(interval_coverage=0.8, interval_bins=())  # the reported strata only
    calibration = model.learn_calibration(mean, actual)
    assert calibration.inv_size == pytest.approx(0.5, abs=0.1)
    fresh = rng.negative_binomial(size, size / (size + mean)).astype(float)
    p10, _, p90 = calibration.quantiles(mean)
    coverage = float(np.mean((fresh >= p10) & (fresh <= p90)))
    assert 0.77 <= coverage <= 0.83


def test_fit_predict_and_unit_contributions_add_up() -> None:
    rng = np.random.default_rng(1)
    x = pl.DataFrame({"a": rng.normal(size=3000), "b": rng.integers(0, 2, 3000).astype(float)})
    rate = np.exp(0.3 * x["a"].to_numpy() + 1.0 * x["b"].to_numpy())
    y = rng.poisson(rate)
    model = DemandModel(n_estimators=30, num_leaves=7, num_threads=1).fit(x, y)
    mean = model.predict(x)
    contrib = model.contributions(x)
    assert np.allclose(np.exp(contrib.sum(axis=1)), mean, rtol=1e-6)  # log-space SHAP
    units = to_unit_contributions(contrib)
    assert np.allclose(units.sum(axis=1), mean, rtol=1e-6)  # units add up to the mean
    signs = np.sign(units[:, :-1]) == np.sign(contrib[:, :-1])
    assert signs.all()
    # the promotion-like binary feature pushes demand up where it is 1
    b_on = x["b"].to_numpy() == 1
    assert units[b_on, 1].mean() > 0 > units[~b_on, 1].mean()


# --- whole-unit quantiles, Mondrian strata (issue 10) -------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    means=st.lists(st.floats(min_value=0.0, max_value=60.0), min_size=1, max_size=40),
    medians=st.lists(st.floats(min_value=-1.0, max_value=80.0), min_size=40, max_size=40),
    inv_size=st.floats(min_value=1e-3, max_value=3.0),
    lower=st.floats(min_value=0.01, max_value=0.45),
)
def test_whole_unit_quantiles_are_ordered_and_consistent_with_expected(
    means: list[float], medians: list[float], inv_size: float, lower: float
) -> None:
    model = DemandModel()
    model.calibration_ = Calibration(
        inv_size=inv_size,
        lower_level=lower,
        inv_sizes=(inv_size, 2 * inv_size, inv_size / 2),
        lower_levels=(lower, lower / 2, min(0.45, 2 * lower)),
    )
    mean = np.array(means)
    for median in (None, np.array(medians[: mean.size])):
        p10, p50, p90 = model.predict_quantiles(mean, median)
        for q in (p10, p50, p90):
            assert np.array_equal(q, np.round(q)) and (q >= 0).all()  # whole units
        assert (p10 <= p50).all() and (p50 <= p90).all()
        assert (p10 <= mean).all() and (mean < p90 + 1).all()  # documented consistency


def test_mondrian_calibration_covers_every_stratum() -> None:
    """Sparse cells are near-Poisson, busy cells overdispersed: one pooled level would
    over-cover the sparse zeros and miss the busy cells; per stratum each gets ~80 %."""
    rng = np.random.default_rng(3)

    def draw(mean: np.ndarray) -> np.ndarray:
        inv = np.where(mean < 2.0, 0.05, 0.8)  # dispersion depends on the level
        size = 1.0 / inv
        return rng.negative_binomial(size, size / (size + mean)).astype(float)

    mean = np.concatenate([rng.uniform(0.02, 0.5, 20_000), rng.uniform(0.5, 8.0, 20_000)])
    cal = DemandModel(interval_coverage=0.8).learn_calibration(mean, draw(mean))
    assert cal.inv_sizes[-1] > 5 * cal.inv_sizes[0]  # dispersion learned per stratum
    fresh = draw(mean)
    p10, p50, p90 = cal.quantiles(mean)
    report = metrics.quantile_report(fresh, mean, p10, p50, p90)
    assert 0.75 <= report["coverage_p10_p90"] <= 0.85
    for label in ("lt0.5", "0.5to2", "ge2"):
        assert 0.70 <= report[f"coverage_{label}"] <= 0.90, label


def test_median_model_gives_whole_unit_p50_near_the_median() -> None:
    rng = np.random.default_rng(4)
    x = pl.DataFrame({"a": rng.uniform(0, 3, 4000)})
    y = rng.poisson(np.exp(x["a"].to_numpy()))
    plain = DemandModel(n_estimators=40, num_leaves=7, num_threads=1)
    calibration = plain.learn_calibration(clone(plain).fit(x, y).predict(x), y)
    model = plain.fit(x, y, calibration=calibration)  # the median model is a step of fit
    mean = model.predict(x)
    _, p50, _ = model.predict_quantiles(mean, model.predict_median(x))
    assert np.array_equal(p50, np.round(p50))
    # absolute error of the median model is no worse than rounding the mean
    assert np.abs(y - p50).mean() <= np.abs(y - np.round(mean)).mean() + 0.01
    off = DemandModel(n_estimators=5, median_model=False).fit(x, y)
    assert off.predict_median(x) is None and off.median_booster_ is None


def test_forecast_rows_are_whole_units_ordered_and_consistent_with_expected() -> None:
    from datetime import UTC, datetime, timedelta

    from salesml.config import Settings
    from salesml.demand import forecasting
    from tests.demand.conftest import daily_pattern_sales, tiny_demand

    start = datetime(2024, 4, 1, tzinfo=UTC)
    sales = daily_pattern_sales(start, 70, customers=("c1", "c2"), skus=("a", "b", "c"))
    settings = Settings(demand=tiny_demand())
    as_of = start + timedelta(days=70)
    fitted = forecasting.fit(sales, settings, as_of)
    assert fitted.model.median_booster_ is not None
    rows = forecasting.forecast_table(
        forecasting.forecast(fitted.model, sales, settings, as_of), "1"
    )
    p10, p50, p90, expected = (rows[c].to_numpy() for c in ("p10", "p50", "p90", "expected"))
    for q in (p10, p50, p90):
        assert np.array_equal(q, np.round(q))
    assert (p10 <= p50).all() and (p50 <= p90).all()
    assert (p10 <= expected).all() and (expected < p90 + 1).all()
    assert "coverage_lt0.5" in fitted.metrics and "coverage_sale" in fitted.metrics


def test_event_days_are_left_out_of_the_calibration() -> None:
    """A held-out day that sold 3x its forecast (an unforeseen holiday) must not widen every
    interval of the next week: with day keys, calibration equals that on the other days."""
    rng = np.random.default_rng(5)
    mean = rng.uniform(0.5, 4.0, 7 * 500)
    days = np.repeat(np.arange(7), 500)
    actual = rng.poisson(mean).astype(float)
    actual[days == 3] = rng.poisson(3.0 * mean[days == 3])
    model = DemandModel(interval_bins=())
    with_days = model.learn_calibration(mean, actual, days)
    normal = days != 3
    clean = model.learn_calibration(mean[normal], actual[normal])
    assert with_days.inv_sizes == clean.inv_sizes
    assert with_days.lower_levels == clean.lower_levels
    pooled = model.learn_calibration(mean, actual)
    assert pooled.inv_sizes[2] > 5 * with_days.inv_sizes[2]  # the spike inflates dispersion
    # a half-week of "events" is the new normal, not an event: nothing is left out
    halves = np.where(days < 4, 0, 1)
    assert not model_event_rows(mean, actual * (days < 4) * 3 + actual * (days >= 4), halves)


def model_event_rows(mean: np.ndarray, actual: np.ndarray, days: np.ndarray) -> bool:
    from salesml.demand.model import event_days

    return bool(event_days(mean, actual, days, 2.0).any())


def test_thin_and_empty_bins_borrow_the_nearest_rows() -> None:
    """5 held-out rows >= 2 (a quiet week) or none at all: the bin is calibrated on the
    `min_stratum_rows` rows nearest in expected demand, not on 5 rows or a fixed default."""
    rng = np.random.default_rng(6)
    mean = np.concatenate([rng.uniform(0.5, 1.99, 3000), rng.uniform(2.0, 2.2, 5)])
    actual = rng.poisson(mean).astype(float)
    cal = DemandModel(interval_bins=(), min_stratum_rows=300).learn_calibration(mean, actual)
    assert cal.stratum_rows == (0, 3000, 5)  # counted in the bin, calibrated on neighbours
    assert all(np.isfinite(cal.coverages))
    assert all(abs(c - 0.8) < 0.06 for c in cal.coverages)
    busy = rng.uniform(1.5, 2.5, 20_000)
    p10, _, p90 = cal.quantiles(busy)
    fresh = rng.poisson(busy)
    report = metrics.quantile_report(fresh, busy, p10, np.round(busy), p90)
    assert 0.70 <= report["coverage_ge2"] <= 0.90
    # below every held-out mean: an empty bin borrows the lowest rows
    low = DemandModel(interval_bins=(0.3,), min_stratum_rows=300).learn_calibration(mean, actual)
    assert low.stratum_rows[0] == 0 and np.isfinite(low.coverages[0])


def test_finer_bins_cover_sale_cells_of_sparse_cells_without_over_covering() -> None:
    """Cells with a 30-45 % chance of a sale: a bin of their own gets [0, 1] for some of them,
    so their sales are covered while the < 0.5 stratum stays within 0.70-0.90."""
    rng = np.random.default_rng(7)
    mean = np.concatenate([rng.uniform(0.02, 0.35, 20_000), rng.uniform(0.35, 0.6, 10_000)])
    fresh = rng.poisson(mean).astype(float)
    coarse = DemandModel(interval_bins=()).learn_calibration(mean, rng.poisson(mean).astype(float))
    fine = DemandModel(interval_bins=(0.35,)).learn_calibration(
        mean, rng.poisson(mean).astype(float)
    )
    assert fine.edges == (0.35, 0.5, 2.0)
    reports = []
    for calibration in (coarse, fine):
        p10, _, p90 = calibration.quantiles(mean)
        reports.append(metrics.quantile_report(fresh, mean, p10, np.zeros_like(mean), p90))
    assert reports[1]["coverage_sale"] > reports[0]["coverage_sale"] + 0.05
    assert 0.70 <= reports[1]["coverage_lt0.5"] <= 0.90


def test_interval_settings_reach_the_model_and_bad_bins_are_refused() -> None:
    from salesml.config import DemandSettings

    demand = DemandSettings(intervals={"interval_bins": [0.2, 1.0], "interval_min_rows": 50})
    model = DemandModel.from_settings(demand)
    assert model.calibration_edges() == (0.2, 0.5, 1.0, 2.0)
    assert (
        model.min_stratum_rows == 50 and model.event_ratio == demand.intervals.interval_event_ratio
    )
    with pytest.raises(ValueError, match=r"demand\.intervals\.interval_bins"):
        DemandSettings(intervals={"interval_bins": [0.0]})


def _small_fit() -> tuple[DemandModel, pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(8)
    x = pl.DataFrame({"a": rng.uniform(0, 3, 1500), "b": rng.normal(size=1500)})
    y = rng.poisson(np.exp(0.6 * x["a"].to_numpy())).astype(float)
    model = DemandModel(n_estimators=15, num_leaves=7, num_threads=1, interval_bins=(0.2,))
    return model.fit(x, y), x, y


def test_clone_round_trip_refits_the_same_model() -> None:
    model, x, y = _small_fit()
    copy = clone(model)
    assert type(copy) is DemandModel and not hasattr(copy, "booster_")
    assert copy.get_params() == model.get_params()
    assert np.array_equal(copy.fit(x, y).predict(x), model.predict(x))
    tuned = clone(model).set_params(num_leaves=3, interval_coverage=0.9)
    assert (tuned.num_leaves, tuned.interval_coverage, model.num_leaves) == (3, 0.9, 7)


def test_defaults_equal_the_config_defaults() -> None:
    """One set of defaults: `DemandModel()` is the model default settings build."""
    from salesml.config import DemandSettings

    assert DemandModel().get_params() == DemandModel.from_settings(DemandSettings()).get_params()


def test_a_refit_keeps_the_calibration_it_is_given() -> None:
    model, x, y = _small_fit()
    before = model.get_params(), model.predict(x), model.calibration_
    calibrated = model.learn_calibration(model.predict(x), y)
    assert calibrated.rows == x.height and len(calibrated.inv_sizes) == 4
    # learning a calibration leaves the fitted model as it was (no post-fit mutators)
    assert model.get_params() == before[0] and model.calibration_ is before[2]
    assert np.array_equal(model.predict(x), before[1])
    refit = clone(model).fit(x, y, calibration=calibrated)
    assert refit.calibration_ is calibrated
    assert clone(model).fit(x, y).calibration_.rows == 0  # uncalibrated by default


def test_models_pickled_by_older_releases_still_load_and_predict_alike() -> None:
    """A model pickled before interval bins, neighbour rows, event days and the median model
    existed (and before BaseEstimator): it loads, keeps its old behaviour and is an estimator."""
    plain, x, y = _small_fit()
    model = clone(plain).fit(x, y, calibration=plain.learn_calibration(plain.predict(x), y))
    new_attrs: tuple[str, ...] = ("interval_bins", "min_stratum_rows", "event_ratio")
    new_attrs += ("refit_decay", "median_booster_")
    state = {k: v for k, v in vars(model).items() if k not in (*new_attrs, "_sklearn_version")}
    old = pickle.loads(pickle.dumps(PickledByOlderRelease(DemandModel, state)))
    assert type(old) is DemandModel
    assert np.array_equal(old.predict(x), model.predict(x))
    assert old.predict_median(x) is None
    assert (old.interval_bins, old.min_stratum_rows, old.event_ratio) == ((), 0, 0.0)
    assert old.calibration_edges() == (0.5, 2.0)
    for a, b in zip(
        old.predict_quantiles(old.predict(x)),
        model.predict_quantiles(model.predict(x)),
        strict=True,
    ):
        assert np.array_equal(a, b)  # the stored calibration is used as is
    assert clone(old).get_params()["interval_bins"] == ()
    assert pickle.loads(pickle.dumps(model)).get_params() == model.get_params()


def test_fit_with_trees_from_keeps_the_trees_and_re_estimates_the_leaves() -> None:
    """The "leaves" / "none" refits are steps of `fit`: the source model is left as it was."""
    model, x, y = _small_fit()
    before = model.predict(x)
    kept = clone(model).set_params(refit_decay=1.0).fit(x, 3 * y, trees_from=model)
    assert np.array_equal(kept.predict(x), before)  # decay 1: the leaves as they are
    moved = clone(model).set_params(refit_decay=0.0).fit(x, 3 * y, trees_from=model)
    assert moved.booster_.num_trees() == model.booster_.num_trees()
    assert moved.predict(x).mean() > 2 * before.mean()  # leaf values follow the new rows
    assert np.array_equal(model.predict(x), before)
    assert moved.median_booster_ is not None and moved.train_rows_ == x.height


def test_from_settings_reads_every_parameter_by_name_also_from_nested_sections() -> None:
    from pydantic import BaseModel

    from salesml.config import DemandSettings
    from salesml.estimator import params_from_settings

    demand = DemandSettings(
        model={"num_leaves": 9, "refit_decay": 0.25}, intervals={"interval_strata": [0.4, 3.0]}
    )
    model = DemandModel.from_settings(demand, median_model=False)
    assert (model.num_leaves, model.interval_strata, model.refit_decay) == (9, (0.4, 3.0), 0.25)
    assert model.median_model is False  # an override wins

    class Model(BaseModel):
        num_leaves: int = 5

    class Nested(BaseModel):
        model: Model = Model()
        seed: int = 3

    class Estimator:
        def __init__(self, num_leaves: int = 1, seed: int = 0) -> None: ...

    assert params_from_settings(Estimator, Nested()) == {"num_leaves": 5, "seed": 3}
    with pytest.raises(ValueError, match=r"Model has no setting for Estimator's parameter.*seed"):
        params_from_settings(Estimator, Model())


def test_every_refit_mode_keeps_the_held_out_calibration_and_fits_the_median() -> None:
    """`refit_after_calibration` is wired through `fit`: the calibration and gate metrics come
    from the model before the held-out weeks whatever the mode; "none" deploys that model's
    trees on its own rows, "leaves" the same trees re-estimated on all rows."""
    from datetime import UTC, datetime, timedelta

    from salesml.config import Settings
    from salesml.demand import forecasting
    from tests.demand.conftest import daily_pattern_sales, tiny_demand

    start = datetime(2024, 4, 1, tzinfo=UTC)
    sales = daily_pattern_sales(start, 49, customers=("c1",), skus=("a", "b"))
    fits = {
        mode: forecasting.fit(
            sales,
            Settings(demand=tiny_demand(model={"refit_after_calibration": mode})),
            start + timedelta(49),
        )
        for mode in ("full", "leaves", "none")
    }
    full, leaves, none = fits["full"], fits["leaves"], fits["none"]
    assert full.metrics == leaves.metrics == none.metrics
    assert full.model.calibration_ == leaves.model.calibration_ == none.model.calibration_
    assert all(f.model.median_booster_ is not None for f in fits.values())
    assert none.model.train_rows_ < leaves.model.train_rows_ == full.model.train_rows_
    assert none.params["train_rows"] < full.params["train_rows"]
    trees = {mode: f.model.booster_.num_trees() for mode, f in fits.items()}
    assert trees["leaves"] == trees["none"]
    x = none.example
    assert x is not None
    assert not np.array_equal(leaves.model.predict(x), none.model.predict(x))
