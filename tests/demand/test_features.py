"""Features read what they should: lags relative to origin/target, windows, signals by scope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from salesml.config import DemandSettings
from salesml.demand import buckets
from salesml.demand.features import (
    build_history,
    declared_features,
    feature_labels,
    feature_names,
    make_features,
    origin_rows,
    training_rows,
)
from salesml.timeutil import DATETIME
from tests.demand.conftest import daily_pattern_sales

START = datetime(2024, 4, 1, tzinfo=UTC)  # Monday
AS_OF = START + timedelta(days=35)


@pytest.fixture(scope="module")
def history_and_rows() -> tuple[object, pl.DataFrame, DemandSettings]:
    demand = DemandSettings(grid={"detect_closed": False})
    sales = daily_pattern_sales(START, 35, skus=("a", "b"))
    history = build_history(sales, demand, "UTC", AS_OF)
    rows = origin_rows(history, history.origin)
    return history, make_features(history, rows, demand), demand


def _y(history: object, sku: str) -> np.ndarray:
    h = history  # type: ignore[assignment]
    sid = h.series.filter(pl.col("sku") == sku)["series_id"].item()  # type: ignore[attr-defined]
    grid = h.grid.filter(pl.col("series_id") == sid).sort("bucket")  # type: ignore[attr-defined]
    return grid.filter(pl.col("bucket") <= h.origin)["y"].to_numpy()  # type: ignore[attr-defined]


def test_lags_and_windows_match_hand_computation(
    history_and_rows: tuple[object, pl.DataFrame, DemandSettings],
) -> None:
    history, features, _ = history_and_rows
    y = _y(history, "a")
    sid = history.series.filter(pl.col("sku") == "a")["series_id"].item()  # type: ignore[attr-defined]
    rows = features.filter(pl.col("series_id") == sid).sort("h")
    assert rows.height == 42 and rows["h"].to_list() == list(range(1, 43))
    first = rows.row(0, named=True)  # h = 1: the bucket right after the origin
    assert first["lag_0"] == y[-1] and first["lag_2"] == y[-3]
    assert first["same_bucket_w1"] == y[-42]  # target t = origin + 1; t - 42 = origin - 41
    assert first["same_bucket_w2"] == y[-84]
    assert first["mean_6"] == pytest.approx(y[-6:].mean())
    assert first["std_42"] == pytest.approx(y[-42:].std(), rel=1e-5)
    assert first["series_mean"] == pytest.approx(y.mean(), rel=1e-5)
    assert first["unit_price"] == 1.0
    assert first["nonzero_share"] == pytest.approx((y[-168:] > 0).mean())
    last = rows.row(41, named=True)  # h = 42: t - 42 is the origin itself
    assert last["same_bucket_w1"] == y[-1]
    assert last["lag_0"] == first["lag_0"]  # recent lags are relative to the origin


def test_recent_lags_do_not_cross_into_another_series(
    history_and_rows: tuple[object, pl.DataFrame, DemandSettings],
) -> None:
    history, _, demand = history_and_rows
    # a training row whose origin is the first bucket of series "b": lag_1 would be series "a"
    sid = history.series.filter(pl.col("sku") == "b")["series_id"].item()  # type: ignore[attr-defined]
    start = history.series["start_row"][sid]  # type: ignore[attr-defined]
    frame = make_features(history, pl.DataFrame({"row": [start + 1], "h": [1]}), demand)  # type: ignore[arg-type]
    assert frame["lag_1"][0] is None
    assert frame["history_buckets"][0] == 1.0


def test_seasonal_lags_are_null_beyond_the_origin() -> None:
    demand = DemandSettings(grid={"detect_closed": False, "horizon_buckets": 60})
    history = build_history(daily_pattern_sales(START, 35), demand, "UTC", AS_OF)
    frame = make_features(history, origin_rows(history, history.origin), demand)
    beyond = frame.filter(pl.col("h") > 42)
    assert beyond["same_bucket_w1"].null_count() == beyond.height  # t - 42 is after the origin
    assert beyond["same_bucket_w2"].null_count() == 0


def test_training_rows_cover_all_horizons_and_only_known_targets() -> None:
    demand = DemandSettings(grid={"detect_closed": True}, model={"horizon_samples": 2})
    sales = daily_pattern_sales(START, 35, customers=("c1", "c2"), skus=("a", "b", "c", "d"))
    history = build_history(sales, demand, "UTC", AS_OF)
    rows = training_rows(history, history.origin - 42, demand)
    frame = make_features(history, rows, demand)
    assert frame["bucket"].max() <= history.origin - 42  # type: ignore[operator]
    assert set(frame["h"].unique().to_list()) == set(range(1, 43))
    assert not frame["closed"].any()
    assert frame["y"].null_count() == 0


def _signals(
    rows: list[tuple[datetime, str, float, str | None, str | None, str | None]],
) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "ts": DATETIME,
            "name": pl.String,
            "value": pl.Float64,
            "sku": pl.String,
            "customer_id": pl.String,
            "region": pl.String,
        },
        orient="row",
    )


def test_signals_most_specific_scope_wins_and_known_ones_use_future_values() -> None:
    demand = DemandSettings(observed_signals=["footfall"], grid={"detect_closed": False})
    sales = daily_pattern_sales(START, 35, customers=("c1", "c2"), skus=("a",))
    history = build_history(sales, demand, "UTC", AS_OF)
    plan_change = AS_OF + timedelta(days=2)  # planned promotion, after as_of
    signals = _signals(
        [
            (START, "promotion", 0.0, None, None, None),  # global
            (START, "promotion", 5.0, "a", "c2", None),  # this store + sku
            (plan_change, "promotion", 1.0, None, None, None),  # planned: global from day 2
            (START, "footfall", 10.0, None, None, None),
            (AS_OF - timedelta(hours=1), "footfall", 20.0, None, None, None),
            (AS_OF + timedelta(hours=1), "footfall", 99.0, None, None, None),  # future: unseen
        ]
    )
    frame = make_features(
        history, origin_rows(history, history.origin), demand, signals, as_of=AS_OF
    ).join(history.series.select("series_id", "customer_id"), on="series_id")
    start_of = buckets.bucket_start(pl.col("bucket"), "UTC", 4)
    c1 = frame.filter(pl.col("customer_id") == "c1").with_columns(at=start_of)
    assert c1.filter(pl.col("at") < plan_change)["signal_promotion"].unique().to_list() == [0.0]
    assert c1.filter(pl.col("at") >= plan_change)["signal_promotion"].unique().to_list() == [1.0]
    c2 = frame.filter(pl.col("customer_id") == "c2")
    assert c2["signal_promotion"].unique().to_list() == [5.0]  # customer+sku beats global
    assert frame["observed_footfall"].unique().to_list() == [20.0]  # as of the origin only


def test_signal_weights_leave_the_feature_raw() -> None:
    """Weights act after the model (salesml.demand.adjust), not on its input."""
    demand = DemandSettings(
        known_signals=["event"],
        signal_weights={"event": {"north": 2.5}},
        grid={"detect_closed": False},
    )
    sales = daily_pattern_sales(START, 35, customers=("c1", "c2")).with_columns(
        region=pl.when(pl.col("customer_id") == "c1")
        .then(pl.lit("north"))
        .otherwise(pl.lit("south"))
    )
    history = build_history(sales, demand, "UTC", AS_OF)
    signals = _signals([(START, "event", 2.0, None, None, None)])
    frame = make_features(
        history, origin_rows(history, history.origin), demand, signals, as_of=AS_OF
    ).join(history.series.select("series_id", "customer_id"), on="series_id")
    by_customer = dict(
        frame.group_by("customer_id").agg(pl.col("signal_event").first()).iter_rows()
    )
    assert by_customer == {"c1": 2.0, "c2": 2.0}


def test_a_closure_day_of_a_daily_shop_is_missing_not_zero_demand() -> None:
    """Issue 10: a whole day without a sale at a shop that sells every day (a holiday, a
    closed Monday) is missing data; at a shop that sells every third day it is demand 0."""
    daily = daily_pattern_sales(START, 35).filter(
        pl.col("ts").dt.date() != (START + timedelta(days=20)).date()
    )
    sparse = daily_pattern_sales(START, 35, customers=("c2",)).filter(
        (pl.col("ts") - START).dt.total_days() % 3 == 0
    )
    sales = pl.concat([daily, sparse])
    closed_day = (START + timedelta(days=20)).date()

    def day_y(demand: DemandSettings, customer: str, day: object) -> list[float | None]:
        history = build_history(sales, demand, "UTC", AS_OF)
        sid = history.series.filter(pl.col("customer_id") == customer)["series_id"].item()
        grid = history.grid.filter(pl.col("series_id") == sid)
        on_day = grid.filter(buckets.local_date(pl.col("bucket"), 4) == day)
        return on_day["y"].to_list()

    demand = DemandSettings(grid={"detect_closed": False})
    assert day_y(demand, "c1", closed_day) == [None] * 6
    assert day_y(demand, "c2", (START + timedelta(days=1)).date()) == [0.0] * 6
    off = DemandSettings(grid={"detect_closed": False, "closure_min_day_share": 1.0})
    assert day_y(off, "c1", closed_day) == [0.0] * 6
    # training never uses a missing target
    history = build_history(sales, demand, "UTC", AS_OF)
    rows = training_rows(history, history.origin, demand)
    assert history.grid["y"].gather(rows["row"]).null_count() == 0


def test_holiday_country_flags_us_thanksgiving_union_with_the_explicit_list() -> None:
    from datetime import date

    from salesml.config import ConfigError, from_dict
    from salesml.demand.features import holiday_dates

    demand = DemandSettings(features={"holiday_country": "US", "holidays": [date(2024, 11, 29)]})
    dates = holiday_dates(demand, 2024, 2025)
    assert date(2024, 11, 28) in dates and date(2025, 11, 27) in dates  # Thanksgiving
    assert date(2024, 11, 29) in dates  # the explicit list is kept
    assert date(2024, 11, 27) not in dates
    assert holiday_dates(DemandSettings(), 2024, 2024) == []
    # the feature: Thanksgiving 2024 buckets are flagged, the day before is not
    start = datetime(2024, 10, 1, tzinfo=UTC)
    as_of = datetime(2024, 11, 25, tzinfo=UTC)
    settings = DemandSettings(grid={"detect_closed": False}, features={"holiday_country": "US"})
    history = build_history(daily_pattern_sales(start, 55), settings, "UTC", as_of)
    frame = make_features(history, origin_rows(history, history.origin), settings)
    day = buckets.local_date(pl.col("bucket"), history.bucket_hours)
    flagged = frame.filter(pl.col("is_holiday") == 1).select(day.unique())
    assert flagged.to_series().to_list() == [date(2024, 11, 28)]
    with pytest.raises(ConfigError, match=r"demand\.features\.holiday_country"):
        from_dict({"demand": {"features": {"holiday_country": "XX"}}})


def test_feature_names_and_labels_derive_from_one_declaration() -> None:
    demand = DemandSettings()
    declared = declared_features(demand)
    labels = feature_labels(demand, ["signal_price", "observed_stock"])
    assert feature_names(demand) == [f.name for f in declared if f.model]
    assert all(labels[f.name] == f.label for f in declared)
    assert labels["signal_price"] == "price planned"
    assert labels["observed_stock"] == "stock (last observed)"
    # a model column without a computation is one a join adds (aggregates)
    joined = {f.name for f in declared if f.expr is None}
    assert joined == {"sku_mean_week", "sku_same_bucket_w1", "customer_mean_week"}


def test_intermittency_labels_follow_the_configured_windows() -> None:
    """The words say the window the features read (the longest mean / spread window)."""
    default = feature_labels(DemandSettings())
    assert default["nonzero_share"] == "share of buckets with a sale (last 4 weeks)"
    assert default["mean_nonzero_size"] == "mean size of a non-zero bucket (last 4 weeks)"
    assert default["mean_6"] == "mean per bucket, last day"
    short = feature_labels(
        DemandSettings(features={"rolling_windows": [6, 42], "spread_windows": [42]})
    )
    assert short["nonzero_share"] == "share of buckets with a sale (last week)"
    hourly = feature_labels(
        DemandSettings(grid={"bucket_hours": 1}, features={"rolling_windows": [24, 168]})
    )
    assert hourly["nonzero_share"] == "share of buckets with a sale (last week)"
    assert hourly["bucket_of_day"] == "1-hour bucket of the day"


def test_intermittency_features_read_the_labelled_window() -> None:
    demand = DemandSettings(
        grid={"detect_closed": False}, features={"rolling_windows": [6, 42], "spread_windows": [42]}
    )
    sales = daily_pattern_sales(START, 35, skus=("a",))
    history = build_history(sales, demand, "UTC", AS_OF)
    first = make_features(history, origin_rows(history, history.origin), demand).row(0, named=True)
    y = _y(history, "a")
    assert first["nonzero_share"] == pytest.approx((y[-42:] > 0).mean())
    assert first["mean_nonzero_size"] == pytest.approx(y[-42:].sum() / (y[-42:] > 0).sum())
