"""Training the deal-win model as of an instant: snapshots, gate, features, fit, holdout.

`fit_deal_win(tables, as_of, settings)` is pure (frames in, fitted model and frames out) and
uses only what was known at `as_of`: labels from outcomes closed by then (see
`snapshots.training_snapshots` for censoring), features from events up to each snapshot, the
feature vocabulary and categorical levels from rows <= as_of.

The holdout is the model's calibration slice: snapshots of the deals that closed last, which the
booster never trained on. Its probabilities are cross-fitted (the calibrator is refitted on one
half of the deals and applied to the other, both ways), so the logged holdout metrics are out of
sample for booster and calibrator alike; AUC is computed on the raw score (calibration cannot
change a ranking). The champion gate scores the current champion on exactly these rows
(`evaluate_model`), so both are compared on the same data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from salesml import metrics
from salesml.config import DealsSettings
from salesml.deals.features import FeatureSpec, build_features, learn_spec
from salesml.deals.model import (
    DealWinModel,
    InsufficientDataError,
    apply_calibrator,
    fit_calibrator,
)
from salesml.deals.snapshots import training_snapshots
from salesml.progress import Progress, report

METRIC_DIRECTION = {"auc": True, "log_loss": False, "brier": False}
"""Whether higher is better, for the metrics the champion gate may use."""


@dataclass
class TrainingResult:
    """A fitted model and what it was fitted and checked on."""

    model: DealWinModel
    spec: FeatureSpec
    snapshots: pl.DataFrame
    features: pl.DataFrame
    holdout: pl.DataFrame
    metrics: dict[str, float]
    won_deals: int
    lost_deals: int


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
    """(won deals, lost deals) behind the snapshots; refuses when either is below its minimum."""
    outcomes = snapshots.group_by("deal_id").agg(pl.col("label").first())
    won = int(outcomes.get_column("label").sum()) if outcomes.height else 0
    lost = outcomes.height - won
    if won < min_won or lost < min_lost:
        raise InsufficientDataError(
            f"refusing to train deal-win as of {as_of.isoformat()}: {won} won and {lost} lost "
            f"deals have outcomes known by then; need at least {min_won} won and {min_lost} lost "
            "(settings deals.min_won / deals.min_lost)"
        )
    return won, lost


def make_model(spec: FeatureSpec, settings: DealsSettings) -> DealWinModel:
    """An unfitted model configured from settings (bands travel with the model)."""
    return DealWinModel(
        feature_spec=spec,
        n_estimators=settings.n_estimators,
        learning_rate=settings.learning_rate,
        num_leaves=settings.num_leaves,
        max_depth=settings.max_depth,
        min_child_samples=settings.min_child_samples,
        subsample=settings.subsample,
        max_bin=settings.max_bin,
        early_stopping_rounds=settings.early_stopping_rounds,
        calibration=settings.calibration,
        valid_fraction=settings.valid_fraction,
        calibration_fraction=settings.calibration_fraction,
        health_bands=settings.bands.model_dump(),
        seed=settings.seed,
        num_threads=settings.num_threads,
    )


def fit_deal_win(
    tables: dict[str, pl.DataFrame],
    as_of: datetime,
    settings: DealsSettings,
    progress: Progress | None = None,
) -> TrainingResult:
    """Fit a calibrated deal-win model on everything known at `as_of`."""
    report(progress, "snapshots", 0.0)
    snapshots = training_snapshots(
        tables["deals"],
        as_of,
        settings.snapshot_every_days,
        settings.min_open_days,
        settings.history_days,
        settings.label_horizon_days,
    )
    won, lost = check_sufficiency(snapshots, as_of, settings.min_won, settings.min_lost)
    report(progress, "features", 0.1)
    spec = learn_spec(tables, as_of, settings)
    features = build_features(snapshots, tables, spec)
    report(progress, "fit", 0.4)
    model = make_model(spec, settings).fit(
        features, snapshots.get_column("label"), snapshots.get_column("closed_at")
    )
    report(progress, "holdout", 0.9)
    in_holdout = pl.Series(model.slice_of_ == 2)
    holdout = snapshots.filter(in_holdout)
    raw = model.predict_raw(features.filter(in_holdout))
    y = holdout.get_column("label").to_numpy()
    p = cross_fitted_probability(model, raw, y, holdout.get_column("deal_id"))
    scores = classification_metrics(y, p)
    scores["auc"] = metrics.auc(y, raw)
    scores["holdout_base_rate"] = float(y.mean())
    scores["holdout_rows"] = float(holdout.height)
    report(progress, "trained", 1.0)
    return TrainingResult(
        model=model,
        spec=spec,
        snapshots=snapshots,
        features=features,
        holdout=holdout.with_columns(pl.Series("win_probability", p)),
        metrics=scores,
        won_deals=won,
        lost_deals=lost,
    )


def cross_fitted_probability(
    model: DealWinModel, raw: np.ndarray, y: np.ndarray, deal_ids: pl.Series
) -> np.ndarray:
    """Probabilities for the calibration slice from calibrators that did not see the row's deal
    (two folds by deal id hash); falls back to the fitted calibrator when a fold lacks a class."""
    fold = (deal_ids.hash(seed=model.seed) % 2).to_numpy().astype(bool)
    p = model.calibrate(raw)
    for held in (fold, ~fold):
        train = ~held
        if held.any() and 0 < y[train].sum() < train.sum():
            calibrator = fit_calibrator(model.calibration, raw[train], y[train])
            p[held] = apply_calibrator(model.calibration, calibrator, raw[held])
    return p


def evaluate_model(
    model: DealWinModel, snapshots: pl.DataFrame, tables: dict[str, pl.DataFrame], metric: str
) -> float:
    """`metric` of any fitted model (e.g. the champion) on labelled snapshots; NaN if it cannot
    be computed (a model whose features cannot be built here is no valid comparison)."""
    if model.feature_spec is None:
        return math.nan
    features = build_features(snapshots, tables, model.feature_spec)
    raw = model.predict_raw(features)
    y = snapshots.get_column("label").to_numpy()
    if metric == "auc":
        return metrics.auc(y, raw)
    return classification_metrics(y, model.calibrate(raw))[metric]
