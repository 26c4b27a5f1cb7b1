"""The leakage screen: planted post-outcome columns are refused by name, real features pass."""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from salesml.config import DealsSettings, LeakageSettings
from salesml.deals.features import FeatureSpec, build_features, learn_spec
from salesml.deals.leakage import (
    SCREEN_SCHEMA,
    LeakageError,
    outcome_labels,
    screen_features,
    separation_auc,
)
from salesml.deals.snapshots import training_snapshots
from salesml.deals.training import fit_deal_win
from tests.deals.conftest import AS_OF, fast_deal_settings, scramble_future


def test_separation_auc_is_the_rank_auc_either_way_round() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500).astype(np.float64)
    score = np.round(y + rng.normal(0, 1.0, 500), 1)  # ties on purpose
    auc = roc_auc_score(y, score)
    assert separation_auc(score, y) == pytest.approx(max(auc, 1 - auc))
    assert separation_auc(-score, y) == pytest.approx(separation_auc(score, y))
    assert np.isnan(separation_auc(score, np.ones(500)))


def _training(
    tables: dict[str, pl.DataFrame], **columns: pl.Expr
) -> tuple[pl.DataFrame, pl.Series, FeatureSpec]:
    """Training snapshots' features at AS_OF, with extra deal columns used as custom features."""
    tables = dict(tables)
    tables["deals"] = tables["deals"].with_columns(**columns)
    settings = DealsSettings(features={"custom_features": list(columns)})
    snaps = training_snapshots(tables["deals"], AS_OF, 7, 2.0)
    spec = learn_spec(tables, AS_OF, settings)
    return build_features(snaps, tables, spec), snaps["label"], spec


WON = pl.col("outcome") == "won"


def test_the_built_in_features_pass_on_a_generated_world(
    small_world: dict[str, pl.DataFrame],
) -> None:
    features, labels, spec = _training(small_world)
    screen = screen_features(features, labels, spec, LeakageSettings())
    assert screen.allowed == {}
    assert dict(screen.scores.schema) == SCREEN_SCHEMA
    assert screen.scores["feature"].to_list() == spec.feature_names()
    assert screen.scores["auc"].max() < 0.9  # type: ignore[operator]
    assert screen.scores["auc"].min() >= 0.5  # type: ignore[operator]


@pytest.mark.parametrize(
    ("column", "expr", "why"),
    [
        # known only after the outcome: the closed deal's value, 0 when lost (Maven's close_value)
        ("close_value", pl.when(WON).then(pl.col("amount")).otherwise(0.0), "by its values"),
        # a field filled in only for lost deals: its null pattern is the outcome
        ("loss_reason", pl.when(WON).then(None).otherwise(pl.lit("price")), "whether it is null"),
        # non-monotone: won deals in the middle band, lost ones on both sides
        (
            "outcome_code",
            pl.when(WON)
            .then(1.0)
            .otherwise(pl.when(pl.col("deal_id").hash(1) % 2 == 0).then(0.0).otherwise(2.0)),
            "per-level win rate",
        ),
    ],
)
def test_a_planted_post_outcome_column_is_refused_by_name(
    small_world: dict[str, pl.DataFrame], column: str, expr: pl.Expr, why: str
) -> None:
    features, labels, spec = _training(small_world, **{column: expr})
    with pytest.raises(LeakageError) as caught:
        screen_features(features, labels, spec, LeakageSettings())
    message = str(caught.value)
    assert "\n" not in message
    assert f"feature '{column}'" in message and why in message
    assert "deals.leakage.allow" in message and "deals.leakage.max_auc 0.95" in message


def test_an_allowed_feature_trains_and_the_override_is_returned_and_logged(
    small_world: dict[str, pl.DataFrame], caplog: pytest.LogCaptureFixture
) -> None:
    features, labels, spec = _training(
        small_world, close_value=pl.when(WON).then(pl.col("amount")).otherwise(0.0)
    )
    with caplog.at_level(logging.WARNING, logger="salesml.deals.leakage"):
        screen = screen_features(
            features, labels, spec, LeakageSettings(allow=["close_value", "not_a_feature"])
        )
    assert list(screen.allowed) == ["close_value"]
    assert screen.allowed["close_value"] > 0.99
    assert "close_value" in caplog.text
    assert screen.scores.filter(pl.col("leaks"))["feature"].to_list() == ["close_value"]


def test_an_id_unique_per_deal_is_not_taken_for_a_leak(
    small_world: dict[str, pl.DataFrame],
) -> None:
    """Folds are by deal, so a deal's own label never informs its level's out-of-fold rate."""
    features, labels, spec = _training(small_world, crm_key=pl.col("deal_id") + "-x")
    screen = screen_features(features, labels, spec, LeakageSettings())
    crm_key = screen.scores.filter(pl.col("feature") == "crm_key").row(0, named=True)
    assert crm_key["levels_auc"] < 0.6 and not crm_key["leaks"]


def test_the_threshold_is_config_and_the_sample_is_seeded(
    small_world: dict[str, pl.DataFrame],
) -> None:
    features, labels, spec = _training(small_world)
    worst = screen_features(features, labels, spec, LeakageSettings()).scores.sort("auc")[-1]
    with pytest.raises(LeakageError, match=f"feature '{worst['feature'].item()}'"):
        screen_features(features, labels, spec, LeakageSettings(max_auc=0.51))
    capped = LeakageSettings(max_rows=1000)
    first = screen_features(features, labels, spec, capped).scores
    assert first.equals(screen_features(features, labels, spec, capped).scores)


def test_the_screen_ignores_the_future(small_world: dict[str, pl.DataFrame]) -> None:
    """Point in time: rewriting every row after as_of leaves every score unchanged."""
    features, labels, spec = _training(small_world)
    changed, changed_labels, _ = _training(scramble_future(small_world, AS_OF))
    settings = LeakageSettings()
    assert screen_features(features, labels, spec, settings).scores.equals(
        screen_features(changed, changed_labels, spec, settings).scores
    )


def test_training_refuses_a_planted_post_outcome_column(
    small_world: dict[str, pl.DataFrame],
) -> None:
    """End to end: `fit_deal_win` screens before it fits, naming the column in one line."""
    tables = dict(small_world)
    tables["deals"] = small_world["deals"].with_columns(
        pl.when(WON).then(pl.col("amount")).otherwise(0.0).alias("close_value")
    )
    settings = fast_deal_settings(
        features={"custom_features": ["close_value"]}, min_won=1, min_lost=1
    )
    with pytest.raises(LeakageError, match="feature 'close_value' alone separates won from lost"):
        fit_deal_win(tables, AS_OF, settings)


def test_the_screen_target_is_the_outcome_known_at_as_of(
    small_world: dict[str, pl.DataFrame],
) -> None:
    """Won / lost as known at as_of; a deal closing later is open then (null, left out)."""
    snaps = training_snapshots(small_world["deals"], AS_OF, 7, 2.0)
    labels = outcome_labels(snaps, small_world["deals"], AS_OF)
    assert labels.to_list() == snaps["label"].cast(pl.Float64).to_list()
    later = small_world["deals"].filter(pl.col("closed_at") > AS_OF)["deal_id"].head(3)
    rows = pl.DataFrame({"deal_id": later})
    assert outcome_labels(rows, small_world["deals"], AS_OF).null_count() == 3


def test_labels_of_one_class_flag_nothing(small_world: dict[str, pl.DataFrame]) -> None:
    features, labels, spec = _training(small_world)
    screen = screen_features(features, pl.Series([1] * labels.len()), spec, LeakageSettings())
    assert not screen.scores["leaks"].any()
    assert screen.scores["values_auc"].is_nan().any()  # NaN: nothing to separate
