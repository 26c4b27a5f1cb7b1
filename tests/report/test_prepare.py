"""Pure report preparation: ordering, labels, calibration pairs, bucketed actuals, summaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from salesml.config import DemandSettings
from salesml.report import prepare
from salesml.timeutil import DATETIME

AS_OF = datetime(2025, 7, 1, tzinfo=UTC)


def test_deals_at_risk_puts_red_first_then_lowest_probability() -> None:
    scores = pl.DataFrame(
        {
            "deal_id": ["g", "y", "r_high", "r_low", "y_low"],
            "win_probability": [0.05, 0.30, 0.60, 0.10, 0.20],
            "health": ["green", "yellow", "red", "red", "yellow"],
        }
    )
    assert prepare.deals_at_risk(scores)["deal_id"].to_list() == [
        "r_low",
        "r_high",
        "y_low",
        "y",
        "g",
    ]


def test_factor_labels_come_from_text_and_fall_back_to_the_feature_name() -> None:
    factors = pl.DataFrame(
        {
            "feature": ["meeting_cto_7d", "days_in_stage", "amount_log"],
            "feature_value": ["2", "21", None],
            "text": ["meetings with CTO, last 7 days = 2: +0.11", "garbled", None],
        }
    )
    labels = prepare.factor_labels(factors)["label"].to_list()
    assert labels == ["meetings with CTO, last 7 days", "days in stage", "amount log"]
    without_text = prepare.factor_labels(factors.drop("text"))["label"].to_list()
    assert without_text == ["meeting cto 7d", "days in stage", "amount log"]


def test_calibration_pairs_use_only_deals_closed_between_the_score_and_as_of() -> None:
    past = pl.DataFrame(
        {
            "as_of": [AS_OF - timedelta(days=30)] * 4 + [AS_OF],
            "deal_id": ["won_since", "lost_since", "closed_before", "still_open", "won_since"],
            "win_probability": [0.8, 0.3, 0.5, 0.4, 0.9],
        },
        schema_overrides={"as_of": DATETIME},
    )
    deals = pl.DataFrame(
        {
            "deal_id": ["won_since", "lost_since", "closed_before", "still_open"],
            "closed_at": [
                AS_OF - timedelta(days=2),
                AS_OF,
                AS_OF - timedelta(days=40),
                None,
            ],
            "outcome": ["won", "lost", "won", None],
        },
        schema_overrides={"closed_at": DATETIME},
    )
    pairs = prepare.calibration_pairs(past, deals, AS_OF)
    # the score made at as_of itself is not a past score; a deal closed before it was scored
    # and a deal still open do not count
    assert pairs.select("deal_id", "won").rows() == [("lost_since", False), ("won_since", True)]


def test_reliability_bins_are_equal_width_with_counts() -> None:
    pairs = pl.DataFrame(
        {
            "win_probability": [0.05, 0.08, 0.95, 1.0],
            "won": [False, True, True, True],
        }
    )
    table = prepare.reliability(pairs, bins=10)
    assert table.rows() == [(0, pytest.approx(0.065), 0.5, 2), (9, pytest.approx(0.975), 1.0, 2)]


def _sales(rows: list[tuple[datetime, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts": [r[0] for r in rows],
            "customer_id": "S1",
            "sku": [r[1] for r in rows],
            "quantity": [r[2] for r in rows],
        },
        schema_overrides={"ts": DATETIME},
    )


def test_bucket_actuals_fill_zeros_net_returns_and_flag_buckets_after_as_of() -> None:
    sales = _sales(
        [
            (AS_OF - timedelta(hours=3), "A", 5.0),  # bucket 20:00-24:00 before as_of
            (AS_OF - timedelta(hours=2), "A", -2.0),  # a return, same bucket
            (AS_OF + timedelta(hours=1), "A", 4.0),  # after as_of: display only
            (AS_OF - timedelta(hours=1), "B", 9.0),  # another series, not asked for
            (AS_OF + timedelta(hours=5), "B", 1.0),  # the source knows sales up to here
        ]
    )
    series = pl.DataFrame({"customer_id": ["S1"], "sku": ["A"]})
    out = prepare.bucket_actuals(
        sales,
        series,
        as_of=AS_OF,
        first=AS_OF - timedelta(hours=8),
        last=AS_OF + timedelta(hours=8),
        demand=DemandSettings(),
        timezone="UTC",
    )
    assert out["sku"].unique().to_list() == ["A"]
    assert out.select("bucket_start", "quantity", "after_as_of").rows() == [
        (AS_OF - timedelta(hours=8), 0.0, False),
        (AS_OF - timedelta(hours=4), 3.0, False),
        (AS_OF, 4.0, True),
        (AS_OF + timedelta(hours=4), 0.0, True),
    ]


def test_global_drivers_count_a_feature_outside_the_top_k_as_zero() -> None:
    start = [AS_OF, AS_OF + timedelta(hours=4)]
    factors = pl.DataFrame(
        {
            "customer_id": ["S1"] * 3,
            "sku": ["A"] * 3,
            "bucket_start": [start[0], start[0], start[1]],
            "feature": ["lag", "price", "lag"],
            "contribution": [-0.4, 0.2, 0.6],
        },
        schema_overrides={"bucket_start": DATETIME},
    )
    out = prepare.global_drivers(factors, n=5)
    assert out.rows() == [("lag", pytest.approx(0.5), 1.0), ("price", pytest.approx(0.1), 0.5)]
    assert prepare.global_drivers(factors.clear(), n=5).height == 0


def test_quarantine_summary_counts_rows_per_table_and_check() -> None:
    quarantine = pl.DataFrame(
        {
            "table_name": ["deals", "deals", "sales"],
            "check": ["non_negative", "non_negative", "not_nullable"],
            "reason": ["amount must be >= 0", "amount must be >= 0", "sku must not be null"],
        }
    )
    out = prepare.quarantine_summary(quarantine)
    assert out.rows() == [
        ("deals", "non_negative", 2, "amount must be >= 0"),
        ("sales", "not_nullable", 1, "sku must not be null"),
    ]


def test_sku_health_order_red_first_then_soonest_stockout() -> None:
    frame = pl.DataFrame(
        {
            "customer_id": ["S"] * 4,
            "sku": ["g", "r_late", "r_soon", "r_none"],
            "health": ["green", "red", "red", "red"],
            "projected_stockout_at": [AS_OF, AS_OF + timedelta(days=2), AS_OF, None],
        },
        schema_overrides={"projected_stockout_at": DATETIME},
    )
    assert prepare.sku_health_order(frame)["sku"].to_list() == ["r_soon", "r_late", "r_none", "g"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('["a", "b"]', ["a", "b"]),
        ("plain words", ["plain words"]),
        (None, []),
        ("", []),
        ('"one"', ["one"]),
    ],
)
def test_json_list(text: str | None, expected: list[str]) -> None:
    assert prepare.json_list(text) == expected


def test_health_counts_has_every_colour() -> None:
    frame = pl.DataFrame({"health": ["red", "red", "green"]})
    assert prepare.health_counts(frame) == {"red": 2, "yellow": 0, "green": 1}


def test_bucket_actuals_stop_where_the_source_has_no_data_yet() -> None:
    sales = _sales([(AS_OF - timedelta(hours=3), "A", 5.0)])  # nothing known after as_of
    series = pl.DataFrame({"customer_id": ["S1"], "sku": ["A"]})
    out = prepare.bucket_actuals(
        sales,
        series,
        as_of=AS_OF,
        first=AS_OF - timedelta(hours=8),
        last=AS_OF + timedelta(hours=24),
        demand=DemandSettings(),
        timezone="UTC",
    )
    # a zero after as_of would read "sold nothing"; the source simply does not know yet
    assert not out["after_as_of"].any()
    assert out["bucket_start"].max() == AS_OF - timedelta(hours=4)


def test_calibration_pairs_skip_scores_without_a_probability() -> None:
    """Deals not scored at the time (too young: null) or with an unusable value make no pair."""
    past = pl.DataFrame(
        {
            "as_of": [AS_OF - timedelta(days=10)] * 4,
            "deal_id": ["scored", "too_young", "nan", "out_of_range"],
            "win_probability": [0.7, None, float("nan"), 1.5],
        },
        schema_overrides={"as_of": DATETIME},
    )
    deals = pl.DataFrame(
        {
            "deal_id": ["scored", "too_young", "nan", "out_of_range"],
            "closed_at": [AS_OF - timedelta(days=1)] * 4,
            "outcome": ["won", "lost", "won", "lost"],
        },
        schema_overrides={"closed_at": DATETIME},
    )
    pairs = prepare.calibration_pairs(past, deals, AS_OF)
    assert pairs.select("deal_id", "win_probability").rows() == [("scored", 0.7)]
