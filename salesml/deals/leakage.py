"""The leakage screen: refuse to train on a feature that alone (almost) gives the outcome away.

A real CRM export often carries columns filled in only after a deal closed (`close_value` is 0
when lost, a loss reason, a "closed" flag), or columns whose *absence* is the outcome (a field
filled in only for won deals). Trained on, they give a model that looks perfect on its holdout
and knows nothing about open deals. So before training, every feature (custom ones included) is
scored on the training snapshots, point in time, by how well it alone separates the deals won
from the deals lost (the eventual outcome known at `as_of`; snapshots of deals still open then
are left out). The eventual outcome, not the training label ("won within H days"): a column
filled in at the close gives the outcome away whenever the close happens, and against the
horizon label it would look weaker than it is (deals won after H days count as 0 there).

- `values`: the rank AUC of a numeric feature over its non-null rows;
- `null pattern`: the AUC of "is null" over all rows (a column filled only for one outcome);
- `levels`: the AUC of the per-level win rate computed out of fold (folds by deal, so a deal's
  snapshots never inform their own rate; smoothed towards the other folds' base rate). Levels are
  a categorical feature's values (null is a level) or a numeric feature's quantile bins (catches
  non-monotone leaks that the rank AUC misses). An id-like column unique per deal gets the prior
  out of fold, so it is not taken for a leak.

Every AUC is taken as max(AUC, 1 - AUC): a feature that separates "backwards" leaks as much. A
feature whose best AUC reaches `deals.leakage.max_auc` stops training with one line naming it;
`deals.leakage.allow` lets a named feature through, and each override is returned (and logged)
so the job can record it with the run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl
from scipy.stats import rankdata

from salesml.config import LeakageSettings
from salesml.deals.features import FeatureSpec, custom_feature_name
from salesml.deals.snapshots import deals_known_at

log = logging.getLogger(__name__)

_PSEUDO_DEALS = 1.0
"""Pseudo-rows pulling an out-of-fold level rate towards the fold's base rate (a level seen once
out of fold cannot score 0 or 1)."""

SCREEN_SCHEMA = {
    "feature": pl.String,
    "auc": pl.Float64,
    "values_auc": pl.Float64,
    "null_auc": pl.Float64,
    "levels_auc": pl.Float64,
    "worst": pl.String,
    "leaks": pl.Boolean,
    "allowed": pl.Boolean,
}


class LeakageError(ValueError):
    """A feature that gives the outcome away; the message is one line naming it."""


@dataclass(frozen=True)
class LeakageScreen:
    """What the screen measured (`scores`, one row per feature, schema SCREEN_SCHEMA) and the
    features at or over the threshold that the config let through (`allowed`: name -> AUC).
    """

    scores: pl.DataFrame
    allowed: dict[str, float]


def separation_auc(score: np.ndarray, y: np.ndarray) -> float:
    """max(AUC, 1 - AUC) of `score` for binary `y` (ties count half); NaN without both classes.

    Rank formula (Mann-Whitney U): AUC = (sum of the positives' average ranks - n1(n1+1)/2) /
    (n1 n0), exact with ties and O(n log n).
    """
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(score)
    auc = (float(ranks[y == 1].sum()) - n1 * (n1 + 1) / 2.0) / (n1 * n0)
    return max(auc, 1.0 - auc)


def out_of_fold_rate(levels: pl.Series, y: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Each row's level win rate from the other folds' rows only, shrunk towards their base rate
    with `_PSEUDO_DEALS` pseudo-rows; a level unseen out of fold gets that base rate.

    Counted with `np.bincount` over (level, fold) codes: it runs once per feature per training,
    so it must cost a fraction of a millisecond per thousand rows.
    """
    codes = levels.cast(pl.String).fill_null("\x00null").rank("dense").cast(pl.Int64).to_numpy() - 1
    folds = int(fold.max()) + 1 if fold.size else 1
    cell = codes * folds + fold
    size = (int(codes.max()) + 1) * folds if codes.size else folds
    weights = y.astype(np.float64)
    won_cell = np.bincount(cell, weights=weights, minlength=size)
    n_cell = np.bincount(cell, minlength=size).astype(np.float64)
    won_level = won_cell.reshape(-1, folds).sum(axis=1)
    n_level = n_cell.reshape(-1, folds).sum(axis=1)
    fold_won = np.bincount(fold, weights=weights, minlength=folds)
    fold_n = np.bincount(fold, minlength=folds).astype(np.float64)
    prior = (fold_won.sum() - fold_won) / np.maximum(fold_n.sum() - fold_n, 1.0)
    won_out = won_level[codes] - won_cell[cell]
    n_out = n_level[codes] - n_cell[cell]
    rates: np.ndarray = (won_out + _PSEUDO_DEALS * prior[fold]) / (n_out + _PSEUDO_DEALS)
    return rates


def _quantile_bins(values: pl.Series, bins: int) -> pl.Series:
    """Equal-count bins of a numeric series (ties share a bin; null stays null)."""
    ranks = values.rank("min")
    count = values.drop_nulls().len()
    return ((ranks - 1) * bins // max(count, 1)).cast(pl.Int64)


def _deal_folds(groups: pl.Series, folds: int, seed: int) -> np.ndarray:
    return (groups.cast(pl.String).hash(seed=seed) % folds).cast(pl.Int64).to_numpy()


def feature_aucs(
    features: pl.DataFrame,
    y: np.ndarray,
    names: list[str],
    categorical: list[str],
    fold: np.ndarray,
    bins: int,
) -> pl.DataFrame:
    """Per feature: the values, null-pattern and levels AUCs (NaN where not defined) and the
    largest of them (`auc`) with which kind it was (`worst`).
    """
    rows = []
    for name in names:
        column = features.get_column(name)
        is_null = column.is_null().to_numpy()
        null_auc = separation_auc(is_null.astype(np.float64), y) if is_null.any() else 0.5
        values_auc = float("nan")
        if name in categorical:
            levels = column
        else:
            column = column.cast(pl.Float64).fill_nan(None)
            present = ~column.is_null().to_numpy()
            if present.any():
                values_auc = separation_auc(column.to_numpy()[present], y[present])
            levels = _quantile_bins(column, bins)
        levels_auc = (  # one level: no separation (fold base rates would fake a little)
            separation_auc(out_of_fold_rate(levels, y, fold), y) if levels.n_unique() > 1 else 0.5
        )
        found = {"values": values_auc, "null pattern": null_auc, "levels": levels_auc}
        worst = max(found, key=lambda k: -1.0 if np.isnan(found[k]) else found[k])
        rows.append(
            {
                "feature": name,
                "auc": found[worst],
                "values_auc": values_auc,
                "null_auc": null_auc,
                "levels_auc": levels_auc,
                "worst": worst,
            }
        )
    schema = {k: SCREEN_SCHEMA[k] for k in ("feature", "auc", "values_auc")}
    schema |= {k: SCREEN_SCHEMA[k] for k in ("null_auc", "levels_auc", "worst")}
    return pl.DataFrame(rows, schema=schema, orient="row")


def outcome_labels(features: pl.DataFrame, deals: pl.DataFrame, as_of: datetime) -> pl.Series:
    """Per feature row: 1 if its deal was won, 0 if lost, null if not closed by `as_of` (outcomes
    known at `as_of` only; `deals` with any `lost_after_days` rule already applied).
    """
    known = deals_known_at(deals, as_of).select(
        "deal_id",
        pl.when(pl.col("outcome") == "won")
        .then(1.0)
        .when(pl.col("outcome") == "lost")
        .then(0.0)
        .alias("_won"),
    )
    joined = features.select("deal_id").join(known, on="deal_id", how="left", maintain_order="left")
    return joined.get_column("_won").rename("won")


def screen_training(
    features: pl.DataFrame,
    deals: pl.DataFrame,
    as_of: datetime,
    spec: FeatureSpec,
    settings: LeakageSettings,
    seed: int = 42,
) -> LeakageScreen:
    """The screen before training at `as_of`: `features` of the training snapshots against their
    deals' outcomes known at `as_of` (see `screen_features`).
    """
    return screen_features(features, outcome_labels(features, deals, as_of), spec, settings, seed)


def screen_features(
    features: pl.DataFrame,
    labels: pl.Series | np.ndarray,
    spec: FeatureSpec,
    settings: LeakageSettings,
    seed: int = 42,
) -> LeakageScreen:
    """Screen every feature of `spec` on labelled snapshots (`features` as built by
    `build_features`, with `deal_id`; `labels` row-aligned, 1 = won, 0 = lost, null = unknown:
    left out). Raises LeakageError naming the feature with the highest AUC among those at or
    over `settings.max_auc` that are not in `settings.allow`; returns the scores and the allowed
    overrides (each also logged).
    """
    known = pl.Series(labels).cast(pl.Float64).fill_nan(None)
    features = features.filter(known.is_not_null())
    y = np.asarray(known.drop_nulls().to_numpy(), dtype=np.float64)
    names = spec.feature_names()
    if features.height > settings.max_rows:
        keep = np.sort(
            np.random.default_rng(seed).choice(features.height, settings.max_rows, replace=False)
        )
        features, y = features[keep], y[keep]
    fold = _deal_folds(features.get_column("deal_id"), settings.folds, seed)
    allow = {custom_feature_name(a) for a in settings.allow} | set(settings.allow)
    scores = feature_aucs(features, y, names, spec.categorical, fold, settings.bins)
    scores = scores.with_columns(
        # NaN (one class only: nothing to separate) is no leak; polars orders NaN above all
        (pl.col("auc").fill_nan(None) >= settings.max_auc).fill_null(False).alias("leaks"),
        pl.col("feature").is_in(sorted(allow)).alias("allowed"),
    ).select(list(SCREEN_SCHEMA))
    flagged = scores.filter(pl.col("leaks")).sort("auc", descending=True)
    refused = flagged.filter(~pl.col("allowed"))
    if refused.height:
        raise LeakageError(_message(refused, features.height, settings.max_auc))
    allowed = dict(zip(flagged["feature"].to_list(), flagged["auc"].to_list(), strict=True))
    for name, auc in allowed.items():
        log.warning(
            "deals.leakage.allow: training with '%s' although it alone separates won from lost "
            "(AUC %.3f >= %.2f)",
            name,
            auc,
            settings.max_auc,
        )
    return LeakageScreen(scores=scores, allowed=allowed)


_WHY = {
    "values": "by its values",
    "null pattern": "by whether it is null",
    "levels": "by its per-level win rate (out of fold)",
}


def _message(refused: pl.DataFrame, rows: int, max_auc: float) -> str:
    first = refused.row(0, named=True)
    others = [f"'{r['feature']}' {r['auc']:.3f}" for r in refused.slice(1, 5).iter_rows(named=True)]
    more = f"; also over it: {', '.join(others)}" if others else ""
    return (
        f"refusing to train deal-win: feature '{first['feature']}' alone separates won from lost "
        f"{_WHY[first['worst']]} (AUC {first['auc']:.3f} >= deals.leakage.max_auc {max_auc:g}, "
        f"{rows} training snapshots of closed deals){more}; it is probably known only after the outcome: drop "
        "it, or list it in deals.leakage.allow to train with it anyway"
    )
