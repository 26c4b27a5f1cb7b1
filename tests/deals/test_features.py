"""Point-in-time deal features on hand-built frames, and leakage on a sample world."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from salesml.config import DealsSettings
from salesml.deals.features import (
    HEALTH_CONTEXT,
    FeatureSpec,
    activity_terms,
    build_features,
    feature_labels,
    learn_spec,
    pair_column,
    window_count,
)
from salesml.deals.snapshots import open_deals, training_snapshots
from salesml.sample import WORLD_END, deals_world
from salesml.timeutil import DATETIME
from tests.deals.conftest import AS_OF, cut_at, scramble_future

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def _frame(rows: dict[str, list[object]], datetimes: tuple[str, ...]) -> pl.DataFrame:
    return pl.DataFrame(rows).with_columns([pl.col(c).cast(DATETIME) for c in datetimes])


@pytest.fixture
def tiny() -> dict[str, pl.DataFrame]:
    deals = _frame(
        {
            "deal_id": ["A", "B", "C", "D"],
            "account_id": ["acc1", "acc1", "acc1", "acc2"],
            "owner_id": ["rep1", "rep1", "rep2", "rep1"],
            "region": ["emea", "emea", None, "apac"],
            "product": ["core", "core", "core", "analytics"],
            "amount": [1000.0, 2000.0, None, 500.0],
            "created_at": [day(0), day(1), day(2), day(3)],
            "expected_close_at": [day(30), day(30), day(30), day(30)],
            "closed_at": [None, day(10), day(20), day(15)],
            "outcome": [None, "won", "lost", "won"],
        },
        ("created_at", "expected_close_at", "closed_at"),
    )
    stages = _frame(
        {
            "deal_id": ["A", "A", "A"],
            "stage": ["qualification", "discovery", "proposal"],
            "entered_at": [day(0), day(5), day(12)],
        },
        ("entered_at",),
    )
    close_dates = _frame(
        {
            "deal_id": ["A", "A", "A"],
            "changed_at": [day(8), day(14), day(16)],
            "expected_close_at": [day(40), day(35), day(50)],
        },
        ("changed_at", "expected_close_at"),
    )
    activities = _frame(
        {
            "activity_id": ["a1", "a2", "a3", "a4", "a5"],
            "deal_id": ["A", "A", "A", None, "B"],
            "account_id": ["acc1"] * 5,
            "occurred_at": [day(1), day(13), day(13.5), day(13), day(2)],
            "activity_type": ["meeting", "meeting", "email", "call", "demo"],
            "contact_role": ["cto", "cto", None, "vp", "cto"],
        },
        ("occurred_at",),
    )
    accounts = pl.DataFrame(
        {
            "account_id": ["acc1", "acc2"],
            "industry": ["software", "retail"],
            "employees": [100.0, 50.0],
            "annual_revenue": [1e7, 5e6],
        }
    )
    return {
        "deals": deals,
        "deal_stage_history": stages,
        "deal_close_date_history": close_dates,
        "activities": activities,
        "accounts": accounts,
    }


def _spec(tables: dict[str, pl.DataFrame], **features: object) -> FeatureSpec:
    """The spec learned with `deals.features` keys `features` (pairs from one occurrence)."""
    values: dict[str, object] = {"min_pair_occurrences": 1, **features}
    return learn_spec(tables, day(100), DealsSettings.model_validate({"features": values}))


def _at(tables: dict[str, pl.DataFrame], spec: FeatureSpec, deal: str, when: float) -> dict:
    rows = pl.DataFrame({"deal_id": [deal], "snapshot_at": [day(when)]}).with_columns(
        pl.col("snapshot_at").cast(DATETIME)
    )
    return build_features(rows, tables, spec).row(0, named=True)


def test_stage_days_in_stage_and_velocity_at_the_snapshot(tiny: dict[str, pl.DataFrame]) -> None:
    spec = _spec(tiny)
    early = _at(tiny, spec, "A", 6)
    assert early["stage"] == "discovery"
    assert early["stage_index"] == 1
    assert early["days_in_stage"] == pytest.approx(1.0)
    assert early["stage_changes"] == 1
    later = _at(tiny, spec, "A", 14)
    assert later["stage"] == "proposal"
    assert later["days_in_stage"] == pytest.approx(2.0)
    assert later["stage_velocity"] == pytest.approx(2 / 14 * 30)


def test_expected_close_and_slips_use_only_changes_known_at_t(
    tiny: dict[str, pl.DataFrame],
) -> None:
    spec = _spec(tiny)
    before = _at(tiny, spec, "A", 7)
    assert before["expected_close_at"] == day(30)
    assert before["close_date_slips"] == 0
    mid = _at(tiny, spec, "A", 15)  # 30 -> 40 (slip), 40 -> 35 (pulled in)
    assert mid["expected_close_at"] == day(35)
    assert mid["close_date_slips"] == 1
    assert mid["close_date_changes"] == 2
    assert mid["days_to_expected_close"] == pytest.approx(20.0)
    late = _at(tiny, spec, "A", 17)  # 35 -> 50: second slip
    assert late["close_date_slips"] == 2


def test_activity_windows_decay_and_recency(tiny: dict[str, pl.DataFrame]) -> None:
    spec = _spec(tiny, activity_windows_days=[7, 30], decay_hours=24.0)
    row = _at(tiny, spec, "A", 14)
    assert row["activities_7d"] == 2  # meeting at 13, email at 13.5; not the one at day 1
    assert row["activities_30d"] == 3
    assert row["n_meeting_30d"] == 2
    assert row["n_with_cto_7d"] == 1
    assert row["n_with_unknown_7d"] == 1  # null role
    # one meeting with the CTO a day ago, half-life 24 h -> 0.5; the one 13 days ago ~ 0
    assert row[pair_column("meeting", "cto")] == pytest.approx(0.5 + 0.5**13)
    assert row["days_since_last_activity"] == pytest.approx(0.5)
    assert row["activities_total"] == 3
    assert row["account_activities_30d"] == 1  # the call without a deal
    weights = DealsSettings().features.role_weights
    expected = weights["cto"] * (0.5 + 0.5**13) + weights["other"] * 0.5**0.5
    assert row["behavior_score"] == pytest.approx(expected)


def test_account_and_rep_win_rates_use_only_outcomes_closed_before_t(
    tiny: dict[str, pl.DataFrame],
) -> None:
    """rate = (won + a * p0) / (closed + a) - p0, a = prior_strength (10), p0 = Laplace-smoothed
    win rate of every deal closed by t; no count of earlier deals is a feature (a time proxy)."""
    spec = _spec(tiny)
    assert not any("prior_won" in n or "prior_lost" in n for n in spec.feature_names())
    at_12 = _at(tiny, spec, "A", 12)  # only B (acc1, rep1) has closed: won at day 10
    p0 = (1 + 1) / (1 + 0 + 2)
    assert at_12["account_win_rate_vs_all"] == pytest.approx((1 + 10 * p0) / (1 + 10) - p0)
    assert at_12["rep_win_rate_vs_all"] == pytest.approx((1 + 10 * p0) / (1 + 10) - p0)
    at_21 = _at(tiny, spec, "A", 21)  # + D (acc2, rep1) won at 15, C (acc1, rep2) lost at 20
    p0 = (2 + 1) / (3 + 2)
    assert at_21["account_win_rate_vs_all"] == pytest.approx((1 + 10 * p0) / (2 + 10) - p0)
    assert at_21["rep_win_rate_vs_all"] == pytest.approx((2 + 10 * p0) / (2 + 10) - p0)
    # a deal never counts its own outcome: B at day 9 sees no closed deal, so exactly the prior
    b = _at(tiny, spec, "B", 9)
    assert b["account_win_rate_vs_all"] == pytest.approx(0.0)


def _spearman(a: pl.Series, b: pl.Series) -> float:
    both = pl.DataFrame({"a": a, "b": b}).drop_nulls()
    return float(np.corrcoef(both["a"].rank(), both["b"].rank())[0, 1])


@pytest.mark.parametrize("signal", [True, False])
def test_account_and_rep_history_does_not_trend_with_the_calendar(signal: bool) -> None:
    """Time-proxy guard: on a generated world, no account or rep history feature moves with the
    snapshot date (|Spearman| < 0.15). Counts of earlier deals (rep's earlier won deals) have
    ~0.94 here, and plain smoothed rates ~0.5 (the win rate of the deals closed so far drifts as
    slower deals close): a model given them learns when a snapshot was taken."""
    tables, _ = deals_world(n_deals=1200, days=300, seed=7, signal=signal)
    snaps = training_snapshots(tables["deals"], AS_OF, 7, 2.0)
    spec = learn_spec(tables, AS_OF, DealsSettings())
    features = build_features(snaps, tables, spec)
    history = [
        n for n in spec.feature_names() if n.startswith(("account_", "rep_")) and "_win_" in n
    ]
    assert history == ["account_win_rate_vs_all", "rep_win_rate_vs_all"]
    for name in history:
        rho = _spearman(features["snapshot_at"], features[name])
        assert abs(rho) < 0.15, f"{name} trends with the snapshot date (Spearman {rho:.2f})"
    # the guard can fail: the rep's count of earlier closed deals trends almost perfectly
    closes = tables["deals"].filter(pl.col("closed_at") <= AS_OF).select("owner_id", "closed_at")
    counts = (
        features.select("deal_id", "snapshot_at")
        .join(tables["deals"].select("deal_id", "owner_id"), on="deal_id")
        .join(closes, on="owner_id", how="left")
        .group_by("deal_id", "snapshot_at")
        .agg((pl.col("closed_at") <= pl.col("snapshot_at")).sum().alias("rep_prior_closed"))
    )
    assert _spearman(counts["snapshot_at"], counts["rep_prior_closed"]) > 0.8


def test_features_keep_input_order_and_labels_cover_every_feature(
    tiny: dict[str, pl.DataFrame],
) -> None:
    spec = _spec(tiny)
    rows = pl.DataFrame(
        {"deal_id": ["D", "A", "A", "B"], "snapshot_at": [day(5), day(14), day(6), day(3)]}
    ).with_columns(pl.col("snapshot_at").cast(DATETIME))
    out = build_features(rows, tiny, spec)
    assert out.select("deal_id", "snapshot_at").equals(rows)
    assert set(spec.feature_names()) <= set(feature_labels(spec))
    assert out.columns[4:] == spec.feature_names()


def test_activity_terms_add_up_to_the_features(tiny: dict[str, pl.DataFrame]) -> None:
    spec = _spec(tiny, activity_windows_days=[7, 30])
    rows = pl.DataFrame({"deal_id": ["A", "A"], "snapshot_at": [day(14), day(3)]}).with_columns(
        pl.col("snapshot_at").cast(DATETIME)
    )
    features = build_features(rows, tiny, spec)
    terms = activity_terms(rows, tiny, spec)
    per_row = terms.group_by("row").agg(pl.col("count_30d").sum()).sort("row")
    assert per_row["count_30d"].to_list() == features["activities_30d"].to_list()


def test_training_snapshots_label_known_outcomes_and_censor_open_deals(
    tiny: dict[str, pl.DataFrame],
) -> None:
    snaps = training_snapshots(tiny["deals"], day(18), every_days=2, min_open_days=1.0)
    # B: created day 1, closed (won) day 10 -> open at 16-2k in [2, 10): 2, 4, 6, 8
    b = snaps.filter(pl.col("deal_id") == "B")
    assert b["snapshot_at"].sort().to_list() == [day(2), day(4), day(6), day(8)]
    assert b["label"].unique().to_list() == [1]
    # A is open at as_of (censored); C closes at day 20 > as_of -> unknown, also censored
    assert set(snaps["deal_id"]) == {"B", "D"}


@pytest.mark.parametrize("future", [cut_at, scramble_future])
def test_features_ignore_every_row_after_as_of(
    small_world: dict[str, pl.DataFrame], future: object
) -> None:
    settings = DealsSettings()
    changed = future(small_world, AS_OF)  # type: ignore[operator]
    snaps = training_snapshots(small_world["deals"], AS_OF, 7, 2.0)
    assert_frame_equal(snaps, training_snapshots(changed["deals"], AS_OF, 7, 2.0))
    spec = learn_spec(small_world, AS_OF, settings)
    assert spec == learn_spec(changed, AS_OF, settings)
    assert_frame_equal(
        build_features(snaps, small_world, spec), build_features(snaps, changed, spec)
    )


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(days_back=st.integers(min_value=20, max_value=200), hours=st.integers(0, 23))
def test_time_travel_property_any_as_of(
    small_world: dict[str, pl.DataFrame], days_back: int, hours: int
) -> None:
    """For any as_of, the full tables and the tables cut at as_of give identical features."""
    as_of = WORLD_END - timedelta(days=days_back, hours=hours)
    spec = learn_spec(small_world, as_of, DealsSettings(features={"min_pair_occurrences": 5}))
    cut = cut_at(small_world, as_of)
    assert spec == learn_spec(cut, as_of, DealsSettings(features={"min_pair_occurrences": 5}))
    snaps = training_snapshots(small_world["deals"], as_of, 7, 2.0)
    open_now = open_deals(small_world["deals"], as_of, 2.0).select("deal_id", "snapshot_at")
    rows = pl.concat([snaps.select("deal_id", "snapshot_at"), open_now])
    assert_frame_equal(build_features(rows, small_world, spec), build_features(rows, cut, spec))


def test_optional_tables_may_be_absent(tiny: dict[str, pl.DataFrame]) -> None:
    tables = {k: v for k, v in tiny.items() if k in ("deals", "activities", "accounts")}
    spec = _spec(tables)
    assert not spec.uses_stage_history and not spec.uses_close_date_history
    assert spec.uses_activities and spec.uses_accounts
    assert "stage_index" not in spec.feature_names()
    assert "close_date_slips" not in spec.feature_names()
    row = _at(tables, spec, "A", 14)
    assert row["stage"] is None  # context for health rules: still there, unknown
    assert row["expected_close_at"] == day(30)
    assert row["days_to_expected_close"] == pytest.approx(16.0)
    assert spec.inputs_note == (
        "no stage history, no close-date history: the model uses deal and account attributes "
        "and activities only"
    )


@pytest.mark.parametrize("absent", ["missing", "empty", "after_as_of"])
def test_no_activity_log_gives_deal_and_account_features_only(
    tiny: dict[str, pl.DataFrame], absent: str
) -> None:
    """CRM-only exports: no activities table (or an empty one, or none known at as_of)."""
    tables = {k: v for k, v in tiny.items() if k in ("deals", "accounts")}
    if absent == "empty":
        tables["activities"] = tiny["activities"].clear()
    elif absent == "after_as_of":  # every activity happens after the spec's as_of (day 100)
        tables["activities"] = tiny["activities"].with_columns(
            pl.col("occurred_at") + timedelta(days=365)
        )
    spec = _spec(tables)
    assert not spec.uses_activities and spec.uses_accounts
    assert spec.inputs_note is not None
    assert spec.inputs_note.startswith("no activity log")
    assert spec.inputs_note.endswith("the model uses deal and account attributes only")
    names = spec.feature_names()
    assert not {"behavior_score", "activities_7d", "days_since_last_activity"} & set(names)
    expected = {"amount", "age_days", "account_win_rate_vs_all", "rep_win_rate_vs_all"}
    assert expected | {"account_industry"} <= set(names)
    rows = pl.DataFrame({"deal_id": ["A", "B"], "snapshot_at": [day(14), day(3)]}).with_columns(
        pl.col("snapshot_at").cast(DATETIME)
    )
    out = build_features(rows, tables, spec)
    assert out.columns[4:] == [*names, *HEALTH_CONTEXT]  # what health rules read
    assert out["days_since_last_activity"].null_count() == 2  # unknown, not "never"
    assert out["account_industry"].to_list() == ["software", "software"]
    # the spec travels with the model: an activity log that appears later changes nothing
    assert_frame_equal(out, build_features(rows, tiny, spec))
    assert FeatureSpec.from_dict(spec.to_dict()) == spec


def test_only_deals_is_required(tiny: dict[str, pl.DataFrame]) -> None:
    tables = {"deals": tiny["deals"]}
    spec = _spec(tables)
    assert spec.inputs_note is not None
    assert spec.inputs_note.endswith("the model uses deal attributes only")
    assert not set(spec.categorical) - set(spec.feature_names())
    out = build_features(
        pl.DataFrame({"deal_id": ["A"], "snapshot_at": [day(14)]}).with_columns(
            pl.col("snapshot_at").cast(DATETIME)
        ),
        tables,
        spec,
    )
    assert out.columns[4:] == [*spec.feature_names(), *HEALTH_CONTEXT]
    assert out.row(0, named=True)["days_in_stage"] == 14.0  # its age: no stage history
    assert out["age_days"].to_list() == [14.0]


def test_old_specs_without_the_uses_flags_load_as_using_every_table(
    tiny: dict[str, pl.DataFrame],
) -> None:
    data = _spec(tiny).to_dict()
    for key in [k for k in data if k.startswith("uses_")]:
        del data[key]
    spec = FeatureSpec.from_dict(data)
    assert spec.uses_activities and spec.uses_accounts and spec.inputs_note is None


def test_custom_deal_columns_become_features(tiny: dict[str, pl.DataFrame]) -> None:
    tables = dict(tiny)
    tables["deals"] = tiny["deals"].with_columns(
        pl.Series("seats", [10, 20, 30, 40]), pl.Series("channel", ["web", "partner", None, "web"])
    )
    spec = _spec(tables, custom_features=["seats", "channel"])
    assert spec.custom_numeric == ["seats"] and spec.custom_categorical == ["channel"]
    assert "channel" in spec.categorical
    row = _at(tables, spec, "B", 3)
    assert (row["seats"], row["channel"]) == (20.0, "partner")
    with pytest.raises(ValueError, match="not a column of deals"):
        _spec(tables, custom_features=["nope"])


def test_names_labels_and_kinds_derive_from_one_declaration(
    tiny: dict[str, pl.DataFrame],
) -> None:
    tables = {**tiny, "deals": tiny["deals"].with_columns(amount_band=pl.lit("small"))}
    spec = _spec(tables, activity_windows_days=[7, 30], custom_features=["amount_band"])
    declared = spec.features()
    names = [f.name for f in declared]
    assert names == spec.feature_names() and len(set(names)) == len(names)
    labels = feature_labels(spec)
    assert all(labels[f.name] == f.label for f in declared)
    assert spec.categorical == ["product", "region", "account_industry", "amount_band"]
    # every activity aggregate carries its computation; nothing else does
    aggregates = {f.name for f in declared if f.agg is not None}
    assert aggregates == {f.name for f in spec.activity_aggregates()}
    assert {"activities_7d", "n_meeting_30d", "n_with_cto_7d", "behavior_score"} <= aggregates


def test_plain_words_of_the_features_are_unchanged(tiny: dict[str, pl.DataFrame]) -> None:
    """The texts of deal_score_factors read these labels: pinned so a refactor cannot move them."""
    spec = _spec(tiny, activity_windows_days=[7, 30], decay_hours=72.0)
    labels = feature_labels(spec)
    assert labels["activities_7d"] == "activities, last 7 days"
    assert labels["n_meeting_30d"] == "meetings, last 30 days"
    assert labels["n_with_cto_7d"] == "activities with CTO, last 7 days"
    assert labels["n_with_unknown_30d"] == "activities with unknown role, last 30 days"
    assert labels[pair_column("meeting", "cto")] == "meetings with CTO, recent (72h half-life)"
    assert labels["behavior_score"] == "behaviour score (role-weighted, 72h half-life)"
    assert labels["stage_velocity"] == "stages advanced per 30 days"
    assert labels["rep_win_rate_vs_all"] == "rep's win rate minus all deals' (smoothed)"


def test_a_window_count_is_named_labelled_and_computed_from_its_parameters() -> None:
    feature = window_count(7, contact_role="vp")
    assert (feature.name, feature.label) == ("n_with_vp_7d", "activities with VP, last 7 days")
    pairs = pl.DataFrame(
        {
            "_age": [0.5, 6.9, 7.0, 1.0],
            "activity_type": ["call", "call", "call", "email"],
            "contact_role": ["vp", "vp", "vp", "cto"],
        }
    )
    assert feature.agg is not None
    assert pairs.select(feature.agg).item() == 2  # age 7.0 is outside (t - 7, t]
    by_type = window_count(30, activity_type="call")
    assert by_type.agg is not None and pairs.select(by_type.agg).item() == 3


def test_labels_cover_the_features_of_unused_tables(tiny: dict[str, pl.DataFrame]) -> None:
    """Health context (days in stage, slips, last activity) is labelled without its table."""
    spec = _spec({"deals": tiny["deals"]})
    assert not spec.uses_stage_history and "days_in_stage" not in spec.feature_names()
    labels = feature_labels(spec)
    assert {"days_in_stage", "close_date_slips", "days_since_last_activity"} <= set(labels)
