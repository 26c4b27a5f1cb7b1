"""Signal weights as post-model adjustments (salesml.demand.adjust): the documented rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from salesml.config import DemandSettings
from salesml.demand import adjust
from salesml.demand.features import build_history, origin_rows
from salesml.demand.model import Calibration, DemandModel
from salesml.timeutil import DATETIME
from tests.demand.conftest import daily_pattern_sales

DEMAND = DemandSettings(known_signals=["price", "promotion"], observed_signals=["footfall"])
START = datetime(2024, 4, 1, tzinfo=UTC)
AS_OF = START + timedelta(days=35)


def _model() -> DemandModel:
    model = DemandModel()
    model.calibration_ = Calibration(inv_size=0.4, lower_level=0.1)
    return model


def _forecast(model: DemandModel) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Six cells: regions north / south / null, promotion on in some, one closed cell."""
    mean = np.array([0.3, 2.5, 7.0, 1.2, 4.0, 0.0])
    closed = np.array([False, False, False, False, False, True])
    p10, p50, p90 = model.predict_quantiles(mean)
    frame = pl.DataFrame(
        {
            "series_id": [0, 0, 1, 1, 2, 2],
            "bucket": [10, 11, 10, 11, 10, 11],
            "horizon": [1, 2, 1, 2, 1, 2],
            "closed": closed,
            "mean": mean,
            "var": model.variance(mean),
            "p10": np.where(closed, 0.0, p10),
            "p50": np.where(closed, 0.0, p50),
            "p90": np.where(closed, 0.0, p90),
        }
    )
    cells = pl.DataFrame(
        {
            "series_id": [0, 0, 1, 1, 2, 2],
            "bucket": [10, 11, 10, 11, 10, 11],
            "region": ["north", "north", "south", "south", None, "north"],
            "signal_promotion": [1.0, 0.0, 1.0, None, 1.0, 1.0],
            "signal_price": [2.0, 2.0, 2.0, 2.0, 2.0, 2.0],
        }
    )
    return frame, cells


def test_weight_one_changes_nothing() -> None:
    model = _model()
    frame, cells = _forecast(model)
    weights = {"promotion": {"north": 1.0, "*": 1.0}, "price": {"all": 1.0}}
    out = adjust.adjust(frame, cells, weights, model, DEMAND)
    assert_frame_equal(out.frame, frame)
    assert out.log["cells"].to_list() == [0, 0, 0]
    assert out.log["units_added"].to_list() == [0.0, 0.0, 0.0]


def test_weight_scales_expected_in_touched_cells_only() -> None:
    model = _model()
    frame, cells = _forecast(model)
    out = adjust.adjust(frame, cells, {"promotion": {"north": 1.5}}, model, DEMAND)
    # north + promotion active + open: only cell 0 (cell 1 promotion 0, cell 5 closed)
    touched = np.array([True, False, False, False, False, False])
    assert out.frame["mean"].to_numpy()[0] == frame["mean"][0] * 1.5
    assert_frame_equal(out.frame.filter(~touched), frame.filter(~touched))
    assert out.log.row(0, named=True) == {
        "signal": "promotion",
        "region": "north",
        "weight": 1.5,
        "cells": 1,
        "units_added": pytest.approx(0.3 * 0.5),
    }


def test_wildcard_region_named_region_wins_and_signals_multiply() -> None:
    model = _model()
    frame, cells = _forecast(model)
    weights = {"promotion": {"*": 2.0, "south": 3.0}, "price": {"north": 0.5}}
    out = adjust.adjust(frame, cells, weights, model, DEMAND)
    ratio = (out.frame["mean"] / frame["mean"]).fill_nan(1.0).to_list()
    # cell 0 north promo: 2 x 0.5; 1 north no promo: 0.5; 2 south promo: 3; 3 south no value;
    # 4 region unknown, promo: wildcard 2; 5 closed: untouched
    assert ratio == pytest.approx([1.0, 0.5, 3.0, 1.0, 2.0, 1.0])
    total = float((out.frame["mean"] - frame["mean"]).sum())
    assert float(out.log["units_added"].sum()) == pytest.approx(total)
    assert dict(zip(out.log["region"], out.log["cells"], strict=True)) == {
        "*": 2,
        "south": 1,
        "north": 2,
    }


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.9, 1.7, 4.0, 25.0])
def test_adjusted_quantiles_are_whole_ordered_and_hold_the_mean(weight: float) -> None:
    model = _model()
    frame, cells = _forecast(model)
    out = adjust.adjust(frame, cells, {"price": {"*": weight}}, model, DEMAND).frame
    p10, p50, p90, mean = (out[c].to_numpy() for c in ("p10", "p50", "p90", "mean"))
    for q in (p10, p50, p90):
        assert np.array_equal(q, np.floor(q))
    assert (p10 <= p50).all() and (p50 <= p90).all()
    assert (p10 <= mean).all() and (mean < p90 + 1).all()
    open_ = ~out["closed"].to_numpy()
    assert np.allclose(mean[open_], frame["mean"].to_numpy()[open_] * weight)
    assert np.allclose(out["var"].to_numpy(), model.variance(mean))


def test_signal_values_are_raw_point_in_time_with_the_region() -> None:
    sales = daily_pattern_sales(START, 35, customers=("c1", "c2")).with_columns(
        region=pl.when(pl.col("customer_id") == "c1").then(pl.lit("north")).otherwise(None)
    )
    demand = DemandSettings(known_signals=["promotion"], grid={"detect_closed": False})
    history = build_history(sales, demand, "UTC", AS_OF)
    rows = origin_rows(history, history.origin)
    frame = rows.select(
        series_id=history.col("series_id").gather(pl.col("row")),
        bucket=history.col("bucket").gather(pl.col("row")),
        horizon=pl.col("h"),
    )
    on = AS_OF + timedelta(days=3)  # a promotion announced for day 3 ahead, only for c1
    signals = pl.DataFrame(
        [(on, "promotion", 1.0, None, "c1", None)],
        schema={"ts": DATETIME, "name": pl.String, "value": pl.Float64, "sku": pl.String,
                "customer_id": pl.String, "region": pl.String},
        orient="row",
    )  # fmt: skip
    cells = adjust.signal_values(history, frame, demand, signals, AS_OF, ["promotion"])
    assert cells.select("series_id", "bucket").equals(frame.select("series_id", "bucket"))
    start = history.series.select("series_id", "customer_id")
    got = cells.join(start, on="series_id").with_columns(
        on=pl.col("signal_promotion").fill_null(0.0) == 1.0
    )
    c1 = got.filter(pl.col("customer_id") == "c1")
    assert set(c1["region"]) == {"north"}
    assert 0 < c1["on"].sum() < c1.height  # from day 3 on only
    assert got.filter(pl.col("customer_id") == "c2")["on"].sum() == 0


def test_scenario_overrides_the_configured_weights() -> None:
    demand = DEMAND.model_copy(update={"signal_weights": {"promotion": {"north": 2.0}}})
    built = adjust.scenario("promo-push", ["promotion=1.5", "price@south=0.9"], demand)
    assert built.weights == {"promotion": {"*": 1.5}, "price": {"south": 0.9}}
    kept = adjust.scenario("x", ["promotion@south=3"], demand)
    assert kept.weights == {"promotion": {"north": 2.0, "south": 3.0}}
    assert demand.signal_weights == {"promotion": {"north": 2.0}}  # config untouched


@pytest.mark.parametrize(
    ("name", "sets", "message"),
    [
        ("s", ["promo=1.5"], "--set 'promo=1.5': unknown signal 'promo'"),
        ("s", ["promotion=lots"], "--set 'promotion=lots': weight 'lots' is not a number"),
        ("s", ["promotion"], "--set 'promotion': expected SIGNAL[@REGION]=WEIGHT"),
        ("s", ["promotion@=2"], "--set 'promotion@=2': expected SIGNAL[@REGION]=WEIGHT"),
        ("s", ["price=-1"], "--set 'price=-1': weight must be a finite number >= 0"),
        ("s", ["price=nan"], "--set 'price=nan': weight must be a finite number >= 0"),
        ("baseline", ["price=1"], "--scenario 'baseline': use 1-64 letters"),
        ("a b", ["price=1"], "--scenario 'a b': use 1-64 letters"),
        ("s", [], "--scenario 's' needs at least one --set"),
    ],
)
def test_bad_options_are_one_line_naming_the_option(
    name: str, sets: list[str], message: str
) -> None:
    with pytest.raises(adjust.ScenarioError) as err:
        adjust.scenario(name, sets, DEMAND)
    text = str(err.value)
    assert text.startswith(message) and "\n" not in text
