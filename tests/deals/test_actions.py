"""Next-best actions: feasible, ranked, exact uplift, blind to the future; warnings by rule."""

from __future__ import annotations

import importlib.util
import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from salesml import contract
from salesml.config import DealActionSettings
from salesml.deals.actions import (
    ACTION_SCHEMA,
    _with_one_more_activity,
    candidate_uplifts,
    deal_actions,
    feasible_candidates,
)
from salesml.deals.features import build_features
from salesml.deals.model import DealWinModel
from salesml.deals.snapshots import open_deals
from salesml.deals.training import TrainingResult
from salesml.sample import PLANTED_ACTIVITY_EFFECTS
from tests.deals.conftest import AS_OF, cut_at, scramble_future

SETTINGS = DealActionSettings()


def _scores(model: DealWinModel, tables: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """What scoring writes for model rows: deal_id, win_probability, score_basis."""
    assert model.feature_spec is not None
    rows = open_deals(tables["deals"], AS_OF, 0.0).select("deal_id", "snapshot_at")
    features = build_features(rows, tables, model.feature_spec)
    return features.select("deal_id").with_columns(
        pl.Series("win_probability", model.predict_proba(features)[:, 1]),
        pl.lit("model").alias("score_basis"),
    )


@pytest.fixture(scope="module")
def actions(small_world: dict[str, pl.DataFrame], trained: TrainingResult) -> pl.DataFrame:
    tables = cut_at(small_world, AS_OF)
    return deal_actions(trained.model, tables, _scores(trained.model, tables), AS_OF, SETTINGS)


def test_actions_are_feasible_ranked_at_most_three_with_exact_uplift(
    small_world: dict[str, pl.DataFrame], trained: TrainingResult, actions: pl.DataFrame
) -> None:
    assert dict(actions.schema) == ACTION_SCHEMA
    contract.OUTPUT_SCHEMAS["deal_actions"].validate(actions)  # probabilities, kinds, ranks
    assert actions.select("deal_id", "rank").is_unique().all()
    acts = actions.filter(pl.col("kind") == "action")
    assert acts.height > 100
    # feasible: pairs seen >= min_pair_occurrences times on deals by as_of (a plain reference)
    known = small_world["activities"].filter(
        (pl.col("occurred_at") <= AS_OF)
        & pl.col("deal_id").is_not_null()
        & pl.col("contact_role").is_not_null()
    )
    counts = Counter(zip(known["activity_type"], known["contact_role"], strict=True))
    frequent = {p for p, n in counts.items() if n >= SETTINGS.min_pair_occurrences}
    assert set(zip(acts["activity_type"], acts["contact_role"], strict=True)) <= frequent
    per_deal = acts.group_by("deal_id").agg(
        pl.col("rank").sort().alias("ranks"), pl.col("uplift").sort_by("rank").alias("uplifts")
    )
    for ranks, uplifts in per_deal.select("ranks", "uplifts").iter_rows():
        assert ranks == list(range(1, len(ranks) + 1)) and len(ranks) <= SETTINGS.top_k
        assert uplifts == sorted(uplifts, reverse=True)
    assert (acts["uplift"] > SETTINGS.min_uplift).all()
    assert (acts["uplift_over_any_activity"] > SETTINGS.min_uplift).all()
    exact = acts["win_probability_after"] - acts["win_probability"]
    assert (acts["uplift"] == exact).all()
    pattern = r" within 72 h: \+[0-9.]+ pts \(\+[0-9.]+ over any activity\)$"
    assert acts["action"].str.contains(pattern).all()
    # warnings come after a deal's actions and carry no uplift
    warnings = actions.filter(pl.col("kind") == "warning")
    assert warnings["uplift"].is_null().all()
    last_action = acts.group_by("deal_id").agg(pl.col("rank").max().alias("last"))
    after = warnings.join(last_action, on="deal_id", how="inner")
    assert (after["rank"] > after["last"]).all()


def test_a_copy_without_the_added_activity_has_the_deals_own_features(
    small_world: dict[str, pl.DataFrame], trained: TrainingResult
) -> None:
    """The re-score runs the same feature code on copies of the deals: stripped of the added
    activity, each copy's features equal its deal's, column for column."""
    spec = trained.model.feature_spec
    assert spec is not None
    tables = cut_at(small_world, AS_OF)
    scores = _scores(trained.model, tables).head(40)
    deals = scores.join(tables["deals"].select("deal_id", "account_id"), on="deal_id")
    candidates = feasible_candidates(deals, tables["activities"], AS_OF, SETTINGS)
    snapshots, copied = _with_one_more_activity(tables, candidates, AS_OF)
    added = copied["activities"]["activity_id"].is_in(snapshots["deal_id"].implode())
    without = {**copied, "activities": copied["activities"].filter(~added)}
    copies = build_features(snapshots, without, spec).drop("deal_id")
    originals = build_features(
        candidates.select("deal_id", pl.lit(AS_OF).alias("snapshot_at")), tables, spec
    ).drop("deal_id")
    assert_frame_equal(copies, originals)


def test_future_activities_and_outcomes_do_not_change_the_actions(
    small_world: dict[str, pl.DataFrame], trained: TrainingResult, actions: pl.DataFrame
) -> None:
    scrambled = scramble_future(small_world, AS_OF)
    again = deal_actions(
        trained.model, scrambled, _scores(trained.model, scrambled), AS_OF, SETTINGS
    )
    assert_frame_equal(actions, again)


def test_strong_planted_pairs_gain_more_than_useless_ones(
    small_world: dict[str, pl.DataFrame], trained: TrainingResult
) -> None:
    """A fast check on the small world of what the model associates with each pair (not a
    causal effect: benchmarks/bench_deal_actions.py measures the Spearman, the useless pairs
    and the world's true uplift next to it, README "Next-best actions")."""
    tables = cut_at(small_world, AS_OF)
    uplifts = candidate_uplifts(
        trained.model, tables, _scores(trained.model, tables), AS_OF, SETTINGS
    )
    planted = pl.DataFrame(
        [
            {"activity_type": t, "contact_role": r, "planted": v}
            for (t, r), v in PLANTED_ACTIVITY_EFFECTS.items()
        ]
    )
    # the placebo's share (one more activity of any kind) is the same for every pair of a deal
    any_share = (
        uplifts.select(
            (pl.col("uplift") - pl.col("uplift_over_any_activity")).alias("any"), "deal_id"
        )
        .group_by("deal_id")
        .agg((pl.col("any").max() - pl.col("any").min()).alias("spread"))
    )
    assert (any_share["spread"] < 1e-12).all()
    joined = uplifts.join(planted, on=["activity_type", "contact_role"], how="inner")
    strong = joined.filter(pl.col("planted") >= 0.5)["uplift_over_any_activity"].mean()
    useless = joined.filter(pl.col("planted") == 0)["uplift_over_any_activity"].mean()
    assert isinstance(strong, float) and isinstance(useless, float)
    assert strong > 4 * abs(useless), (strong, useless)


def _tiny_world(as_of: datetime) -> dict[str, pl.DataFrame]:
    """Three open deals: A old and single-threaded (engineer only; a CTO call after as_of),
    B multi-threaded with a CTO, C young and single-threaded."""
    day = timedelta(days=1)
    deals = pl.DataFrame(
        {
            "deal_id": ["A", "B", "C"],
            "account_id": ["X", "Y", "Z"],
            "created_at": [as_of - 60 * day, as_of - 60 * day, as_of - 5 * day],
            "closed_at": [None, None, None],
            "outcome": [None, None, None],
        },
        schema_overrides={"closed_at": pl.Datetime("us", "UTC"), "outcome": pl.String},
    )
    rows = [
        ("A", as_of - 3 * day, "call", "engineer"),
        ("A", as_of - 10 * day, "email", "engineer"),
        ("A", as_of - 40 * day, "meeting", "cto"),
        ("A", as_of + 1 * day, "call", "cto"),
        ("B", as_of - 2 * day, "meeting", "cto"),
        ("B", as_of - 4 * day, "email", "engineer"),
        ("C", as_of - 1 * day, "demo", "engineer"),
    ]
    activities = pl.DataFrame(
        {
            "activity_id": [f"a{i}" for i in range(len(rows))],
            "deal_id": [r[0] for r in rows],
            "account_id": [{"A": "X", "B": "Y", "C": "Z"}[r[0]] for r in rows],
            "occurred_at": [r[1] for r in rows],
            "activity_type": [r[2] for r in rows],
            "contact_role": [r[3] for r in rows],
        }
    )
    return {"deals": deals, "activities": activities}


def test_warnings_fire_on_a_single_threaded_deal() -> None:
    as_of = datetime(2025, 3, 1, tzinfo=UTC)
    tables = _tiny_world(as_of)
    scores = pl.DataFrame(
        {
            "deal_id": ["A", "B", "C"],
            "win_probability": [0.2, 0.5, 0.3],
            "score_basis": ["base_rate"] * 3,
        }
    )
    rows = deal_actions(None, tables, scores, as_of, SETTINGS)
    out = {(d, a) for d, a in rows.select("deal_id", "action").iter_rows()}
    assert out == {
        ("A", "single-threaded (one contact): only the engineer engaged in the last 30 days"),
        ("A", "no senior contact (CTO, CEO, VP) in the last 30 days"),
        ("C", "single-threaded (one contact): only the engineer engaged in the last 30 days"),
    }
    assert (rows["kind"] == "warning").all() and rows["uplift"].is_null().all()
    assert rows.filter(pl.col("deal_id") == "A")["rank"].to_list() == [1, 2]
    assert rows.filter(pl.col("deal_id") == "A")["contact_role"].to_list() == ["engineer", None]


def test_no_senior_warning_when_the_data_names_no_senior_role() -> None:
    as_of = datetime(2025, 3, 1, tzinfo=UTC)
    tables = _tiny_world(as_of)
    tables["activities"] = tables["activities"].with_columns(
        pl.col("contact_role").replace({"cto": "engineer"})
    )
    scores = pl.DataFrame({"deal_id": ["A"], "win_probability": [0.2], "score_basis": ["model"]})
    rows = deal_actions(None, tables, scores, as_of, SETTINGS)
    assert rows["action"].to_list() == [
        "single-threaded (one contact): only the engineer engaged in the last 30 days"
    ]


def test_uplifts_do_not_depend_on_the_chunk_size(
    small_world: dict[str, pl.DataFrame], trained: TrainingResult
) -> None:
    tables = cut_at(small_world, AS_OF)
    scores = _scores(trained.model, tables)
    whole = candidate_uplifts(trained.model, tables, scores, AS_OF, SETTINGS)
    chunked = candidate_uplifts(trained.model, tables, scores, AS_OF, SETTINGS, chunk_deals=50)
    assert whole.height > 1000
    assert_frame_equal(whole, chunked)


def test_without_an_activity_log_or_open_deals_there_are_no_rows(
    small_world: dict[str, pl.DataFrame], trained: TrainingResult
) -> None:
    tables = cut_at(small_world, AS_OF)
    scores = _scores(trained.model, tables)
    crm_only = {"deals": tables["deals"], "accounts": tables["accounts"]}
    for frame in (
        deal_actions(trained.model, crm_only, scores, AS_OF, SETTINGS),
        deal_actions(trained.model, tables, scores.clear(), AS_OF, SETTINGS),
    ):
        assert frame.height == 0 and dict(frame.schema) == ACTION_SCHEMA
    with pytest.raises(ValueError, match="scores lack the column 'score_basis'"):
        deal_actions(trained.model, tables, scores.drop("score_basis"), AS_OF, SETTINGS)


def _benchmark() -> ModuleType:
    """benchmarks/bench_deal_actions.py (a script, not a package), loaded by path."""
    path = Path(__file__).parents[2] / "benchmarks" / "bench_deal_actions.py"
    spec = importlib.util.spec_from_file_location("bench_deal_actions", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmarks_true_uplift_is_the_worlds_causal_effect() -> None:
    """The reference the README quotes against the model's uplift: an action moves only the
    log-odds at the close, by its planted effect decayed from as_of to the close (72 h
    half-life), and nothing for a deal closing after the label horizon or a useless pair."""
    as_of = datetime(2025, 3, 1, tzinfo=UTC)
    truth = pl.DataFrame(
        {
            "deal_id": ["soon", "late"],
            "final_closed_at": [as_of + timedelta(hours=36), as_of + timedelta(days=70)],
            "true_log_odds": [0.4, 0.0],
        }
    )
    rows = pl.DataFrame(
        {
            "deal_id": ["soon", "soon", "late"],
            "activity_type": ["demo", "email", "demo"],
            "contact_role": ["cto", "engineer", "cto"],
        }
    )
    bench = _benchmark()
    got = bench.true_uplift(rows, truth, as_of, 60, bench.DEFAULT_MECHANISM).to_list()

    def sigmoid(x: float) -> float:
        return 1.0 / (1.0 + math.exp(-x))

    planted = PLANTED_ACTIVITY_EFFECTS[("demo", "cto")] * 0.5 ** (36 / 72)
    assert got[0] == pytest.approx(sigmoid(0.4 + planted) - sigmoid(0.4), abs=1e-12)
    assert got[0] > 0.05
    assert got[1:] == [0.0, 0.0]  # planted useless; closes after the horizon
    lasting = bench.true_uplift(rows, truth, as_of, 60, bench.ACTION_EXPERIMENT).to_list()
    half_life = bench.ACTION_EXPERIMENT.effect_half_life_hours
    planted = PLANTED_ACTIVITY_EFFECTS[("demo", "cto")] * 0.5 ** (36 / half_life)
    assert lasting[0] == pytest.approx(sigmoid(0.4 + planted) - sigmoid(0.4), abs=1e-12)
