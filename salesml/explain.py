"""SHAP contributions -> the top-k drivers of each prediction, in plain words (both models).

Spaces (say which one you pass; the numbers differ):
- raw score: what LightGBM's `pred_contrib=True` returns (`shap_contributions`): log-odds for a
  binary model, log of the mean for poisson/tweedie, the prediction itself for regression
  (L2). Exact TreeSHAP: each row's contributions + base value (last column) == raw score.
- probability (`to_probability_contributions`): log-odds contributions rescaled so they add up
  to the probability; a readable approximation, see its docstring.

`top_factors` is space-agnostic: it ranks whatever contributions it gets and writes the text with
the `unit` you name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt
import polars as pl

from salesml.numeric import sigmoid

if TYPE_CHECKING:
    import lightgbm as lgb
    import pandas as pd

Unit = Literal["log-odds", "probability", "units"]
UNIT_SUFFIX: dict[str, str] = {"log-odds": "", "probability": "", "units": " units"}
MISSING_TEXT = "missing"

FACTOR_SCHEMA: dict[str, pl.DataType] = {
    "row_idx": pl.UInt32(),
    "rank": pl.Int32(),
    "feature": pl.String(),
    "feature_value": pl.String(),
    "contribution": pl.Float64(),
    "text": pl.String(),
}
"""Output of `top_factors`. `row_idx` matches `with_row_index()` (UInt32) for joining ids back.
Not a contract table: callers join their ids (deal_id; customer_id, sku, bucket_start) on
`row_idx` and cast `rank` to the contract's Int64 (`deal_score_factors`,
`demand_forecast_factors`)."""


def shap_contributions(
    model: lgb.Booster | lgb.LGBMModel, features: np.ndarray | pd.DataFrame | pl.DataFrame
) -> np.ndarray:
    """Exact TreeSHAP contributions (n, f + 1) in raw-score space; last column = base value.

    Uses LightGBM's native `pred_contrib=True` (identical to shap.TreeExplainer's path-dependent
    values, and faster here: `benchmarks/bench_shap.py`). `model` is a Booster or an
    `LGBMModel` (its `booster_`); `features` numeric numpy/pandas/polars, columns in training order.
    """
    booster = getattr(model, "booster_", model)
    contrib = np.asarray(booster.predict(features, pred_contrib=True), dtype=np.float64)
    expected = booster.num_feature() + 1
    if contrib.ndim != 2 or contrib.shape[1] != expected:
        raise ValueError(
            f"expected contributions of shape (n, {expected}); got {contrib.shape} "
            "(multiclass models are not supported)"
        )
    return contrib


def additivity_error(contrib: npt.ArrayLike, raw_score: npt.ArrayLike) -> float:
    """Largest |sum of a row's contributions incl. base - raw score| (same space as contrib).

    For LightGBM `pred_contrib` vs `predict(raw_score=True)` this is ~1e-13.
    """
    values = np.asarray(contrib, dtype=np.float64)
    raw = np.asarray(raw_score, dtype=np.float64).reshape(-1)
    if values.shape[0] != raw.size:
        raise ValueError(f"{values.shape[0]} contribution rows vs {raw.size} raw scores")
    return float(np.max(np.abs(values.sum(axis=1) - raw))) if raw.size else 0.0


def to_probability_contributions(contrib: npt.ArrayLike) -> np.ndarray:
    """Log-odds contributions -> probability contributions (n, f + 1); last column = base prob.

    Each row's log-odds contributions are scaled by (p - p0) / (logit p - logit p0), where p is the
    row's probability and p0 = sigmoid(base value), so they add up exactly to p - p0 and keep
    their signs and order. (The limit p0 (1 - p0) is used when the row's score equals the base.)
    This is a proportional rescaling for display, not Shapley values of the probability
    (those need interventional SHAP with a background set, far slower). Input: binary log-odds
    space (`shap_contributions` of a binary model), before any calibration.
    """
    values = np.asarray(contrib, dtype=np.float64)
    base = values[:, -1]
    delta = values[:, :-1].sum(axis=1)
    p0 = sigmoid(base)
    p = sigmoid(base + delta)
    tiny = np.abs(delta) < 1e-12
    scale = np.where(tiny, p0 * (1.0 - p0), (p - p0) / np.where(tiny, 1.0, delta))
    out = values[:, :-1] * scale[:, None]
    return np.column_stack([out, p0])


def top_factors(
    contrib: npt.ArrayLike,
    feature_names: Sequence[str],
    feature_values: pl.DataFrame,
    labels: Mapping[str, str] | None = None,
    k: int = 5,
    unit: Unit = "log-odds",
    decimals: int = 2,
    drop_zero: bool = True,
) -> pl.DataFrame:
    """The k largest |contributions| of each row as a long frame (schema `FACTOR_SCHEMA`).

    `contrib` is (n, f + 1) with the base value last (ignored here); `feature_names` names its
    first f columns; `feature_values` has those columns (raw, human-readable values: the
    category name, not its code) for the same n rows. Rank 1 is the largest |contribution|;
    ties go to the feature name in alphabetical order. Zero contributions are dropped unless
    `drop_zero=False` (a feature that did not move the prediction is not a reason), so a row
    can have fewer than k factors. `text` reads e.g. "meetings with CTO, last 7 days = 2: +0.11"
    using `labels` {feature: human label} (else the name with underscores as spaces).
    """
    values = np.asarray(contrib, dtype=np.float64)
    names = list(feature_names)
    n_rows, n_features = _check_inputs(values, names, feature_values)
    k = min(k, n_features)
    if k < 1 or n_rows == 0:
        return pl.DataFrame(schema=FACTOR_SCHEMA)

    phi = values[:, :n_features]
    by_name = np.argsort(np.asarray(names, dtype=object), kind="stable")
    order = np.argsort(-np.abs(phi[:, by_name]), axis=1, kind="stable")[:, :k]
    feature_idx = by_name[order]  # (n, k) column index of each rank
    contribution = np.take_along_axis(phi, feature_idx, axis=1).reshape(-1)
    flat_feature = feature_idx.reshape(-1)
    row_idx = np.repeat(np.arange(n_rows, dtype=np.uint32), k)

    display = _display_matrix(feature_values, names)  # column-major: index = feature * n + row
    value_text = display.gather(flat_feature.astype(np.int64) * n_rows + row_idx)
    label_series = pl.Series(
        [labels.get(n, _default_label(n)) if labels else _default_label(n) for n in names]
    )

    factors = pl.DataFrame(
        {
            "row_idx": row_idx,
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n_rows),
            "feature": pl.Series(names, dtype=pl.String).gather(flat_feature),
            "feature_value": value_text,
            "contribution": contribution,
            "label": label_series.gather(flat_feature),
        }
    )
    if drop_zero:
        factors = factors.filter(pl.col("contribution") != 0)
    text = pl.format(
        "{} = {}: {}",
        pl.col("label"),
        pl.col("feature_value"),
        signed_number(pl.col("contribution"), decimals) + pl.lit(UNIT_SUFFIX[unit]),
    )
    return factors.with_columns(text.alias("text")).select(list(FACTOR_SCHEMA))


def summarize(factors: pl.DataFrame, separator: str = "; ") -> pl.DataFrame:
    """One line per row: the factor texts in rank order -> (row_idx, top_factors)."""
    return (
        factors.sort("row_idx", "rank")
        .group_by("row_idx", maintain_order=True)
        .agg(pl.col("text").str.join(separator).alias("top_factors"))
    )


def signed_number(value: pl.Expr, decimals: int = 2) -> pl.Expr:
    """Format a float with an explicit sign and a fixed number of decimals ("+0.10", "-1.25")."""
    if decimals < 0:
        raise ValueError("decimals must be >= 0")
    scale = 10**decimals
    scaled = (value.abs() * scale).round(0).cast(pl.Int64)
    sign = pl.when(value < 0).then(pl.lit("-")).otherwise(pl.lit("+"))
    whole = (scaled // scale).cast(pl.String)
    if decimals == 0:
        return pl.concat_str(sign, whole)
    fraction = (scaled % scale).cast(pl.String).str.zfill(decimals)
    return pl.concat_str(sign, whole, pl.lit("."), fraction)


def _check_inputs(
    values: np.ndarray, names: list[str], feature_values: pl.DataFrame
) -> tuple[int, int]:
    if values.ndim != 2:
        raise ValueError(f"contributions must be 2-D (n, f + 1); got shape {values.shape}")
    n_rows, width = values.shape
    if width != len(names) + 1:
        raise ValueError(
            f"contributions have {width} columns; expected {len(names)} features + 1 base value"
        )
    if len(set(names)) != len(names):
        raise ValueError("feature_names must be unique")
    missing = [name for name in names if name not in feature_values.columns]
    if missing:
        raise ValueError(f"feature_values lacks columns {missing[:5]}")
    if feature_values.height != n_rows:
        raise ValueError(f"feature_values has {feature_values.height} rows; contributions {n_rows}")
    return n_rows, len(names)


def _default_label(name: str) -> str:
    return name.replace("_", " ")


def _display_matrix(frame: pl.DataFrame, names: list[str]) -> pl.Series:
    """All feature values as display strings, stacked column after column (n * f values)."""
    shown = frame.select(
        _display_expr(pl.col(name), frame.schema[name]).alias(name) for name in names
    )
    return pl.concat([shown[name] for name in names], rechunk=True)


def _display_expr(column: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """How a value reads in a reason: integers plain, floats to ~3 significant digits."""
    if dtype.is_float():
        plain = (
            pl.when(column.is_nan())
            .then(pl.lit(None, dtype=pl.String))
            .when(column == column.round(0))
            .then(column.cast(pl.Int64, strict=False).cast(pl.String))
            .when(column.abs() >= 100)
            .then(column.round(0).cast(pl.Int64, strict=False).cast(pl.String))
            .when(column.abs() >= 1)
            .then(column.round(2).cast(pl.String))
            .otherwise(column.round_sig_figs(2).cast(pl.String))
        )
    elif dtype == pl.Boolean:
        plain = pl.when(column).then(pl.lit("yes")).otherwise(pl.lit("no"))
    elif isinstance(dtype, pl.Datetime):
        plain = column.dt.to_string("%Y-%m-%d %H:%M")
    elif dtype == pl.Date:
        plain = column.dt.to_string("%Y-%m-%d")
    else:
        plain = column.cast(pl.String, strict=False)
    return (
        pl.when(column.is_null())
        .then(pl.lit(MISSING_TEXT))
        .otherwise(plain)
        .fill_null(MISSING_TEXT)
    )
