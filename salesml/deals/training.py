"""Training the deal-win model as of an instant: snapshots, honest split, fit, skill.

`fit_deal_win(tables, as_of, settings)` is pure (frames in, fitted model and frames out) and
uses only what was known at `as_of`: labels "won within H days of the snapshot" with full
follow-up (`snapshots.labelled_snapshots`), features from events up to each snapshot, the
feature vocabulary and categorical levels from rows <= as_of.

The honest holdout looks like scoring (`honest_split`): it is the latest snapshots with full
follow-up (the last `holdout_days` of snapshot times), split by SNAPSHOT time, and the booster
trains only on snapshots whose label time (t + H) is at or before the first holdout snapshot,
so no holdout snapshot predates a label the booster learned from. The holdout picks the number
of trees and fits the calibrator of the deployed model; its reported metrics are cross-fitted
by deal (see `model.DealWinModel`), so they are out of sample for booster, tree count and
calibrator, and they are the metrics of the model that is deployed (no refit afterwards).

Skill (the gate, `tracking.decide`): on the same out-of-fold holdout rows, the Brier skill
score against the base rate (cross-fitted the same way: one fold's event rate predicts the
other) with a bootstrap interval over deals, and the Brier of the static logistic baseline
(fitted on the training part, calibrated by the same cross-fitting).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl

from salesml import metrics
from salesml.config import DealsSettings
from salesml.deals.baselines import StaticLogitBaseline
from salesml.deals.features import FeatureSpec, build_features, learn_spec
from salesml.deals.leakage import screen_training
from salesml.deals.model import (
    Calibration,
    DealWinModel,
    InsufficientDataError,
    apply_calibrator,
    deal_folds,
    fit_calibrator,
)
from salesml.deals.snapshots import apply_lost_after, labelled_snapshots, open_deals
from salesml.progress import Progress, report
from salesml.timeutil import DATETIME

METRIC_DIRECTION = {"auc": True, "log_loss": False, "brier": False}
"""Whether higher is better, for the metrics the champion gate may use."""


@dataclass
class TrainingResult:
    """A fitted model and what it was fitted and checked on: `snapshots` (training part and
    holdout, with `features` row for row), `in_holdout` marks the holdout rows; `holdout` has
    their out-of-fold `win_probability`; `metrics` are the holdout's (cross-fitted).
    """

    model: DealWinModel
    spec: FeatureSpec
    snapshots: pl.DataFrame
    features: pl.DataFrame
    in_holdout: pl.Series
    holdout: pl.DataFrame
    metrics: dict[str, float]
    won_deals: int
    lost_deals: int
    leakage_allowed: dict[str, float] = field(default_factory=dict)
    """Features over the leakage threshold that `deals.leakage.allow` let through (name -> AUC)."""


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC, log loss, Brier, expected calibration error and top-decile lift of probabilities."""
    return {
        "auc": metrics.auc(y, p),
        "log_loss": metrics.log_loss(y, p),
        "brier": metrics.brier(y, p),
        "ece": metrics.expected_calibration_error(y, p),
        "lift_top_decile": metrics.lift_top_decile(y, p),
    }


def check_sufficiency(
    snapshots: pl.DataFrame, as_of: datetime, min_won: int, min_lost: int
) -> tuple[int, int]:
    """(deals with the event, deals without) behind the snapshots; refuses when either is
    below its minimum.
    """
    outcomes = snapshots.group_by("deal_id").agg(pl.col("label").max())
    won = int(outcomes.get_column("label").sum()) if outcomes.height else 0
    lost = outcomes.height - won
    if won < min_won or lost < min_lost:
        raise InsufficientDataError(
            f"refusing to train deal-win as of {as_of.isoformat()}: the training part has {won} "
            f"deals won within the label horizon and {lost} not; need at least {min_won} and "
            f"{min_lost} (settings deals.min_won / deals.min_lost; or a shorter "
            "deals.label_horizon_days)"
        )
    return won, lost


def make_model(spec: FeatureSpec, settings: DealsSettings) -> DealWinModel:
    """An unfitted model configured from settings, with the feature spec learned at as_of."""
    return DealWinModel.from_settings(settings, feature_spec=spec)


def with_lost_after(
    tables: dict[str, pl.DataFrame], settings: DealsSettings
) -> dict[str, pl.DataFrame]:
    """The tables with `deals.lost_after_days` applied to deals (every path sees the same
    outcomes: labels, features' win rates, open deals).
    """
    if settings.lost_after_days is None:
        return tables
    return {**tables, "deals": apply_lost_after(tables["deals"], settings.lost_after_days)}


def training_snapshots(
    deals: pl.DataFrame, as_of: datetime, settings: DealsSettings
) -> pl.DataFrame:
    """Every labelled snapshot the deal-win model may learn from at `as_of` (`deals` with
    `with_lost_after` applied): the settings' cadence, horizon, minimum age and history.
    """
    return labelled_snapshots(
        deals,
        as_of,
        settings.snapshot_every_days,
        settings.label_horizon_days,
        settings.min_open_days,
        settings.history_days,
    )


def honest_split(snapshots: pl.DataFrame, holdout_days: int) -> tuple[pl.Series, pl.Series]:
    """(training mask, holdout mask) over labelled snapshots (snapshot_at, label_at).

    Holdout: snapshot_at in the last `holdout_days` of snapshot times. Training: label_at at or
    before the first holdout snapshot. Snapshots in between are in neither (their labels would
    overlap the holdout's time).
    """
    times = snapshots.get_column("snapshot_at")
    last = times.max()
    if last is None:
        empty = pl.Series([], dtype=pl.Boolean)
        return empty, empty
    holdout = times > pl.lit(last, DATETIME) - pl.duration(days=holdout_days)
    in_holdout = snapshots.select(holdout.alias("h")).to_series()
    first = times.filter(in_holdout).min()
    training = snapshots.select((pl.col("label_at") <= pl.lit(first, DATETIME)).alias("t"))
    return training.to_series(), in_holdout


def fit_deal_win(
    tables: dict[str, pl.DataFrame],
    as_of: datetime,
    settings: DealsSettings,
    progress: Progress | None = None,
) -> TrainingResult:
    """Fit a calibrated deal-win model on everything known at `as_of` (see module docstring)."""
    report(progress, "snapshots", 0.0)
    tables = with_lost_after(tables, settings)
    labelled = training_snapshots(tables["deals"], as_of, settings)
    training, in_holdout = honest_split(labelled, settings.holdout_days)
    used = training | in_holdout
    snapshots = labelled.filter(used)
    is_holdout = in_holdout.filter(used)
    won, lost = check_sufficiency(
        labelled.filter(training), as_of, settings.min_won, settings.min_lost
    )
    report(progress, "features", 0.1)
    spec = learn_spec(tables, as_of, settings)
    features = build_features(snapshots, tables, spec)
    screen = screen_training(features, tables["deals"], as_of, spec, settings.leakage)
    report(progress, "fit", 0.4)
    model = make_model(spec, settings).fit(
        features, snapshots.get_column("label"), is_holdout, snapshots.get_column("deal_id")
    )
    report(progress, "holdout", 0.9)
    holdout = snapshots.filter(is_holdout)
    scores = holdout_metrics(model, features, snapshots, is_holdout, tables, as_of, settings)
    report(progress, "trained", 1.0)
    return TrainingResult(
        model=model,
        spec=spec,
        snapshots=snapshots,
        features=features,
        in_holdout=is_holdout,
        holdout=holdout.with_columns(pl.Series("win_probability", model.oof_probability_)),
        metrics=scores,
        won_deals=won,
        lost_deals=lost,
        leakage_allowed=dict(screen.allowed),
    )


def holdout_metrics(
    model: DealWinModel,
    features: pl.DataFrame,
    snapshots: pl.DataFrame,
    is_holdout: pl.Series,
    tables: dict[str, pl.DataFrame],
    as_of: datetime,
    settings: DealsSettings,
) -> dict[str, float]:
    """The metrics of the model's out-of-fold holdout probabilities (`oof_probability_`; AUC
    of its raw scores), its noise at as_of (`open_deal_noise`) and skill (`skill_metrics`).
    """
    holdout = snapshots.filter(is_holdout)
    y = holdout.get_column("label").to_numpy()
    p = model.oof_probability_
    scores = classification_metrics(y, p)
    scores["auc"] = metrics.auc(y, model.oof_raw_)
    scores["base_rate"] = float(y.mean())
    scores["rows"] = float(holdout.height)
    scores["mean_probability"] = float(p.mean())
    scores |= open_deal_noise(holdout, p, tables["deals"], as_of, settings.min_open_days)
    scores |= skill_metrics(
        model,
        features.filter(~is_holdout),
        features.filter(is_holdout),
        snapshots.filter(~is_holdout).get_column("label").to_numpy(),
        holdout,
        settings,
    )
    return scores


def open_deal_noise(
    holdout: pl.DataFrame, p: np.ndarray, deals: pl.DataFrame, as_of: datetime, min_open_days: float
) -> dict[str, float]:
    """How far the Brier realised on the deals scored at `as_of` may stray from the reported
    holdout Brier by chance alone (`brier_open_se`, known at as_of): those deals are one
    cross-section of a few thousand, so their Brier is one draw with variance about
    var(squared error over the holdout rows) / (deals the model scores at as_of), and the
    holdout Brier is an estimate too (its variance clustered by deal, as a deal's weekly
    snapshots share one outcome). The standard error of the difference is the root of the sum.
    A difference of 0.01 is then expected now and then when this is near 0.005.
    """
    n_open = open_deals(deals, as_of, min_open_days).filter(~pl.col("young")).height
    y = holdout.get_column("label").to_numpy().astype(np.float64)
    error = (p - y) ** 2
    if error.size < 2:
        return {"open_deals": float(n_open), "brier_open_se": math.nan}
    by_deal = (
        pl.DataFrame({"deal_id": holdout.get_column("deal_id"), "e": error - error.mean()})
        .group_by("deal_id")
        .agg(pl.col("e").sum())
        .get_column("e")
        .to_numpy()
    )
    holdout_var = float((by_deal**2).sum()) / error.size**2
    open_var = float(np.var(error, ddof=1)) / max(n_open, 1)
    return {"open_deals": float(n_open), "brier_open_se": math.sqrt(open_var + holdout_var)}


def cross_fit(method: Calibration, raw: np.ndarray, y: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Probabilities from a calibrator fitted on the other fold (two folds: `fold` True/False)."""
    out = np.full(raw.size, float(y.mean()))
    for held in (fold, ~fold):
        own = ~held
        if held.any() and 0 < y[own].sum() < own.sum():
            calibrator = fit_calibrator(method, raw[own], y[own])
            out[held] = apply_calibrator(method, calibrator, raw[held])
    return out


def skill_metrics(
    model: DealWinModel,
    train_features: pl.DataFrame,
    holdout_features: pl.DataFrame,
    y_train: np.ndarray,
    holdout: pl.DataFrame,
    settings: DealsSettings,
) -> dict[str, float]:
    """Brier skill vs the base rate (with its bootstrap interval over deals) and the Brier of
    the logistic baseline, on the out-of-fold holdout rows (see module docstring).
    """
    y = holdout.get_column("label").to_numpy().astype(np.float64)
    deal_ids = holdout.get_column("deal_id")
    fold = deal_folds(deal_ids, model.seed)
    base = np.where(fold, y[~fold].mean(), y[fold].mean())  # each fold: the other's rate
    logistic = StaticLogitBaseline().fit(train_features, y_train)
    q = np.clip(logistic.predict(holdout_features), 1e-9, 1 - 1e-9)
    logit = np.log(q) - np.log1p(-q)
    p_logistic = cross_fit(settings.model.calibration, logit, y, fold)
    skill, low, high = metrics.bootstrap_brier_skill(
        y,
        model.oof_probability_,
        base,
        deal_ids.to_numpy(),
        settings.skill_bootstrap,
        settings.skill_level,
        settings.model.seed,
    )
    return {
        "base_rate_brier": metrics.brier(y, base),
        "logistic_brier": metrics.brier(y, p_logistic),
        "logistic_auc": metrics.auc(y, logit),
        "brier_skill": skill,
        "brier_skill_low": low,
        "brier_skill_high": high,
    }


def evaluate_model(
    model: DealWinModel, snapshots: pl.DataFrame, tables: dict[str, pl.DataFrame], metric: str
) -> float:
    """`metric` of any fitted model (e.g. the champion) on labelled snapshots; NaN if it cannot
    be computed (a model whose features cannot be built here is no valid comparison).
    """
    if model.feature_spec is None:
        return math.nan
    features = build_features(snapshots, tables, model.feature_spec)
    raw = model.predict_raw(features)
    y = snapshots.get_column("label").to_numpy()
    if metric == "auc":
        return metrics.auc(y, raw)
    return classification_metrics(y, model.calibrate(raw))[metric]
