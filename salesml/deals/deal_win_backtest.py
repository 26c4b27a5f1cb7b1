"""Rolling-origin backtest of the deal-win model next to its baselines.

At each origin T (`backtest_step_days` apart, the last one's window ending
max(`backtest_follow_up_days`, H) before as_of): fit the model, the base rate and the static
logistic regression on what was known at T (`training.fit_deal_win(tables, T)`), then score the
weekly snapshots in (T, T + step], the states the model would have scored while it was the
deployed model, labelled with the same event as training (won within H days of the snapshot,
H = `label_horizon_days`), all with full follow-up at as_of, so nothing is censored. Every
predictor is measured on the same rows.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from salesml.backtest import BacktestResult, rolling_origins, run_backtest
from salesml.config import DealsSettings
from salesml.deals.baselines import BaseRateBaseline, StaticLogitBaseline
from salesml.deals.features import build_features
from salesml.deals.snapshots import labelled_snapshots
from salesml.deals.training import classification_metrics, fit_deal_win, with_lost_after
from salesml.progress import Progress, report
from salesml.timeutil import DATETIME

PREDICTORS = {"model": "p_model", "base_rate": "p_base_rate", "logistic": "p_logistic"}


def backtest_origins(
    as_of: datetime, n_origins: int, step_days: int, follow_up_days: int = 0
) -> list[datetime]:
    """`n_origins` origins, `step_days` apart; the last one's evaluation window (step_days)
    ends `follow_up_days` before as_of, leaving its deals time to close.
    """
    step = timedelta(days=step_days)
    last = as_of - step - timedelta(days=follow_up_days)
    return rolling_origins(last - (n_origins - 1) * step, last, n_origins)


def evaluation_snapshots(
    deals: pl.DataFrame, origin: datetime, as_of: datetime, settings: DealsSettings
) -> pl.DataFrame:
    """Labelled snapshots in (origin, origin + step] with full follow-up at as_of."""
    end = min(origin + timedelta(days=settings.backtest.step_days), as_of)
    labelled = labelled_snapshots(
        deals,
        as_of,
        settings.snapshot_every_days,
        settings.label_horizon_days,
        settings.min_open_days,
        None,
        settings.lost_after_days,
    )
    return labelled.filter(
        (pl.col("snapshot_at") > pl.lit(origin, DATETIME))
        & (pl.col("snapshot_at") <= pl.lit(end, DATETIME))
    )


def predict_origin(
    tables: dict[str, pl.DataFrame], origin: datetime, as_of: datetime, settings: DealsSettings
) -> pl.DataFrame:
    """Fit everything at `origin`; predictions of model and baselines on the next step's rows."""
    tables = with_lost_after(tables, settings)
    trained = fit_deal_win(tables, origin, settings)
    rows = evaluation_snapshots(tables["deals"], origin, as_of, settings)
    if rows.height == 0:
        raise ValueError(f"no labelled snapshots after origin {origin.isoformat()}")
    spec = trained.model.feature_spec
    assert spec is not None
    features = build_features(rows, tables, spec)
    y_train = trained.snapshots.get_column("label").to_numpy()
    logistic = StaticLogitBaseline().fit(trained.features, y_train)
    base = BaseRateBaseline().fit(trained.holdout.get_column("label").to_numpy())
    return rows.select("deal_id", "snapshot_at", "label").with_columns(
        pl.Series("p_model", trained.model.predict_proba(features)[:, 1]),
        pl.Series("p_base_rate", base.predict(rows.height)),
        pl.Series("p_logistic", logistic.predict(features)),
    )


def score_origin(predictions: pl.DataFrame) -> dict[str, float]:
    """Metrics of every predictor, prefixed by its name (model_auc, logistic_brier, ...)."""
    y = predictions.get_column("label").to_numpy().astype(np.float64)
    out: dict[str, float] = {"base_rate": float(y.mean())}
    for name, column in PREDICTORS.items():
        for metric, value in classification_metrics(
            y, predictions.get_column(column).to_numpy()
        ).items():
            out[f"{name}_{metric}"] = value
    return out


def backtest_deal_win(
    tables: dict[str, pl.DataFrame],
    as_of: datetime,
    settings: DealsSettings,
    n_origins: int = 4,
    progress: Progress | None = None,
) -> BacktestResult:
    """Run the rolling-origin backtest (see module docstring)."""
    origins = backtest_origins(
        as_of,
        n_origins,
        settings.backtest.step_days,
        max(settings.backtest.follow_up_days, settings.label_horizon_days),
    )

    def on_origin(done: int, total: int, origin: datetime, metrics: dict[str, float]) -> None:
        report(progress, f"origin {origin.date().isoformat()}", done / total)

    return run_backtest(
        origins,
        lambda origin: predict_origin(tables, origin, as_of, settings),
        score_origin,
        progress=on_origin,
    )


def summarize(result: BacktestResult, as_of: datetime) -> dict[str, Any]:
    """JSON-ready summary: per-origin and mean metrics plus the model-vs-baseline verdicts."""
    data = result.to_dict()
    per_origin = result.per_origin
    verdicts: dict[str, Any] = {}
    for metric, higher in (("auc", True), ("log_loss", False), ("brier", False)):
        model = per_origin.get_column(f"model_{metric}").to_numpy()
        logistic = per_origin.get_column(f"logistic_{metric}").to_numpy()
        wins = model > logistic if higher else model < logistic
        verdicts[f"beats_logistic_{metric}_every_origin"] = bool(np.all(wins))
    base_gap = [
        m - b
        for m, b in zip(
            per_origin.get_column("model_brier").to_list(),
            per_origin.get_column("base_rate_brier").to_list(),
            strict=True,
        )
    ]
    verdicts["worst_brier_minus_base_rate"] = (
        float(max(base_gap)) if base_gap and not any(math.isnan(g) for g in base_gap) else None
    )
    return {"model": "deal-win", "as_of": as_of.isoformat(), **data, "verdicts": verdicts}
