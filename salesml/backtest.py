"""Rolling-origin backtests shared by both models (no IO, no model code).

A backtest replays history: for each origin T the model is fitted on what was known at T
(events <= T) and scored on what happened after T. The model plugs in two callables:

- `fit_predict(origin) -> pl.DataFrame`: train as of `origin`, predict the evaluation window
  (one row per prediction, with whatever truth columns `score` needs);
- `score(predictions) -> dict[str, float]`: metrics of one origin (see `salesml.metrics`).

The same origins must be used to compare a candidate with the champion (promotion gate).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from salesml.timeutil import DATETIME

FitPredict = Callable[[datetime], pl.DataFrame]
Score = Callable[[pl.DataFrame], dict[str, float]]
ProgressCallback = Callable[[int, int, datetime, dict[str, float]], None]
"""Called after each origin with (origins done, origins total, origin, its metrics)."""


class BacktestError(RuntimeError):
    """fit_predict or score failed at one origin; the message names the origin."""


def rolling_origins(first: datetime, last: datetime, n: int) -> list[datetime]:
    """`n` evenly spaced origins from `first` to `last` inclusive (UTC, sorted, microseconds).

    n == 1 gives [last] (the most recent origin). Naive datetimes are refused: the caller
    decides their timezone (config `timezone`) before calling.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    for name, value in (("first", first), ("last", last)):
        if value.tzinfo is None:
            raise ValueError(f"{name} origin must be timezone-aware (got {value.isoformat()})")
    start, end = first.astimezone(UTC), last.astimezone(UTC)
    if start > end:
        raise ValueError(f"first origin {start.isoformat()} is after last {end.isoformat()}")
    if n == 1:
        return [end]
    if start == end:
        raise ValueError(f"{n} origins need first < last")
    span_us = (end - start) // timedelta(microseconds=1)
    return [start + timedelta(microseconds=span_us * i // (n - 1)) for i in range(n)]


@dataclass(frozen=True)
class BacktestResult:
    """Per-origin metrics (`origin`, `n_rows`, `seconds`, one column per metric) and their means.

    `mean` ignores NaN origins (a metric undefined at one origin, e.g. AUC with one class);
    a metric NaN everywhere has mean NaN (null in JSON).
    """

    per_origin: pl.DataFrame
    mean: dict[str, float]
    predictions: pl.DataFrame | None = field(default=None, repr=False)

    @property
    def metric_names(self) -> list[str]:
        """Names of the metrics, in the order they were computed."""
        return list(self.mean)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: origin count, mean per metric and per-origin rows (NaN as null)."""
        rows = [
            {key: _jsonable(value) for key, value in row.items()}
            for row in self.per_origin.iter_rows(named=True)
        ]
        return {
            "n_origins": self.per_origin.height,
            "mean": {key: _jsonable(value) for key, value in self.mean.items()},
            "per_origin": rows,
        }

    def to_json(self, indent: int | None = None) -> str:
        """One JSON object (NaN/inf as null, datetimes ISO 8601 UTC): `salesml backtest --json`."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


def run_backtest(
    origins: Sequence[datetime],
    fit_predict: FitPredict,
    score: Score,
    progress: ProgressCallback | None = None,
    keep_predictions: bool = False,
) -> BacktestResult:
    """Run `fit_predict` then `score` at each origin (in order) and summarise.

    With `keep_predictions`, all prediction frames are kept (stacked, with an `origin` column)
    for calibration plots; they must share a schema. A failure at an origin raises
    BacktestError naming it (no silent skipping: a hole in a backtest changes its mean).
    """
    if not origins:
        raise ValueError("a backtest needs at least one origin")
    ordered = sorted(origins)
    rows: list[dict[str, Any]] = []
    kept: list[pl.DataFrame] = []
    for done, origin in enumerate(ordered, start=1):
        started = time.perf_counter()
        try:
            predictions = fit_predict(origin)
            metrics = {key: float(value) for key, value in score(predictions).items()}
        except Exception as exc:
            raise BacktestError(f"backtest origin {origin.isoformat()}: {exc}") from exc
        rows.append(
            {
                "origin": origin,
                "n_rows": predictions.height,
                "seconds": time.perf_counter() - started,
                **metrics,
            }
        )
        if keep_predictions:
            kept.append(predictions.with_columns(pl.lit(origin, dtype=DATETIME).alias("origin")))
        if progress is not None:
            progress(done, len(ordered), origin, metrics)
    per_origin = _per_origin_frame(rows)
    metric_names = [c for c in per_origin.columns if c not in ("origin", "n_rows", "seconds")]
    mean = {name: _nanmean(per_origin[name]) for name in metric_names}
    predictions_all = pl.concat(kept, how="vertical_relaxed") if kept else None
    return BacktestResult(per_origin=per_origin, mean=mean, predictions=predictions_all)


def _per_origin_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    names: list[str] = []
    for row in rows:  # metrics in first-seen order; a metric missing at an origin is null
        names.extend(key for key in row if key not in names)
    schema: dict[str, Any] = {name: pl.Float64 for name in names}
    schema.update({"origin": DATETIME, "n_rows": pl.Int64})
    return pl.DataFrame(
        [{name: row.get(name) for name in names} for row in rows], schema=schema, orient="row"
    )


def _nanmean(values: pl.Series) -> float:
    finite = values.drop_nulls().drop_nans()
    return float(finite.mean()) if finite.len() else math.nan  # type: ignore[arg-type]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
