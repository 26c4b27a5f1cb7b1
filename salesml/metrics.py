"""Evaluation metrics shared by both models (pure numpy and scikit-learn, no IO).

AUC, log loss, Brier and pinball loss are scikit-learn's, wrapped for the conventions below;
what scikit-learn lacks (ECE, lift, WAPE, MASE, bias, coverage, the demand scorecard) is here.

Classification (deal-win): `auc`, `log_loss`, `brier`, `expected_calibration_error`,
`lift_top_decile`; `y_true` is 0/1, `y_prob` a probability of 1.
Regression (demand, in units per bucket): `wape`, `mase`, `bias`, `pinball_loss`,
`interval_coverage`.

Every function takes array-likes (numpy, lists, polars/pandas Series) of equal length and returns
a Python float. A metric that is undefined on the data (one class only for AUC, zero actual volume
for WAPE) returns NaN instead of raising, so one bad backtest origin does not stop a backtest; the
backtest summary uses NaN-aware means.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from sklearn import metrics as skm

ArrayLike = npt.ArrayLike

CALIBRATION_BINS = 10
"""Equal-width probability bins used by `expected_calibration_error` by default."""


def _as_float(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    return array


def _pair(a: ArrayLike, b: ArrayLike, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    first, second = _as_float(a, names[0]), _as_float(b, names[1])
    if first.shape != second.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} differ in length: {first.size} vs {second.size}"
        )
    return first, second


def _binary(y_true: ArrayLike, y_prob: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y, p = _pair(y_true, y_prob, ("y_true", "y_prob"))
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must hold only 0 and 1")
    return y, p


# --- classification -------------------------------------------------------------------------


def auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the ROC curve: sklearn's `roc_auc_score` (average ranks for ties).

    NaN when only one class is present (sklearn warns and returns NaN) or a score is not
    finite (sklearn raises), so one bad backtest origin does not stop a backtest.
    """
    y, score = _binary(y_true, y_score)
    n_pos = float(y.sum())
    if n_pos in (0, y.size) or not np.isfinite(score).all():
        return math.nan
    return float(skm.roc_auc_score(y, score))


def log_loss(y_true: ArrayLike, y_prob: ArrayLike, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood in nats (sklearn's `log_loss`); probabilities are clipped
    to [eps, 1 - eps] first (sklearn alone clips at machine epsilon). NaN for a NaN prob.
    """
    y, p = _binary(y_true, y_prob)
    if np.isnan(p).any():
        return math.nan
    return float(skm.log_loss(y, np.clip(p, eps, 1.0 - eps), labels=[0.0, 1.0]))


def brier(y_true: ArrayLike, y_prob: ArrayLike) -> float:
    """Mean squared error of the probability (sklearn's `brier_score_loss`; 0 perfect, 0.25
    for a constant 0.5). NaN for a NaN probability.
    """
    y, p = _binary(y_true, y_prob)
    if np.isnan(p).any():
        return math.nan
    return float(skm.brier_score_loss(y, p, pos_label=1.0))


class CalibrationBins(NamedTuple):
    """The non-empty equal-width probability bins, one array element per bin, in bin order."""

    bin: np.ndarray
    """Bin index b: probabilities in [b/n_bins, (b+1)/n_bins) (the last bin includes 1.0)."""
    n: np.ndarray
    """Rows in the bin (int64)."""
    mean_probability: np.ndarray
    observed_rate: np.ndarray
    """Share of rows with y_true = 1 (the observed win rate)."""


def calibration_bins(
    y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = CALIBRATION_BINS
) -> CalibrationBins:
    """Reliability table: per non-empty equal-width bin on [0, 1], rows, mean probability and
    observed rate. The one binning behind ECE, the report's reliability curve and the training
    calibration plot, so they all show the same bins.
    """
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    y, p = _binary(y_true, y_prob)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("y_prob must lie in [0, 1]")
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    filled = np.flatnonzero(count > 0)
    sum_prob = np.bincount(bins, weights=p, minlength=n_bins)[filled]
    sum_true = np.bincount(bins, weights=y, minlength=n_bins)[filled]
    n = count[filled].astype(np.int64)
    return CalibrationBins(filled, n, sum_prob / n, sum_true / n)


def expected_calibration_error(
    y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = CALIBRATION_BINS
) -> float:
    """ECE with `n_bins` equal-width bins on [0, 1].

    Bin b holds probabilities in [b/n_bins, (b+1)/n_bins) (the last bin includes 1.0).
    ECE = sum over non-empty bins of (rows in bin / rows) * |observed win rate - mean probability|.
    Equal-width (not equal-mass) bins so the value is comparable across models and origins.
    """
    table = calibration_bins(y_true, y_prob, n_bins)
    gap = np.abs(table.observed_rate - table.mean_probability)
    return float(np.sum(table.n / table.n.sum() * gap))


def lift_top_decile(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Win rate among the top 10 % by score divided by the overall win rate.

    The top decile is the ceil(n / 10) highest scores; ties at the cut are taken in input order
    (stable sort), so the value is deterministic. NaN when there are no positives.
    """
    y, score = _binary(y_true, y_score)
    base_rate = float(y.mean())
    if base_rate == 0:
        return math.nan
    top = max(1, math.ceil(y.size / 10))
    order = np.argsort(-score, kind="stable")[:top]
    return float(y[order].mean()) / base_rate


# --- regression / forecasting ---------------------------------------------------------------


def wape(actual: ArrayLike, forecast: ArrayLike) -> float:
    """Weighted absolute percentage error: sum |actual - forecast| / sum |actual|.

    A ratio (0.25 = 25 %); NaN when the actual volume is zero.
    """
    a, f = _pair(actual, forecast, ("actual", "forecast"))
    volume = float(np.abs(a).sum())
    return float(np.abs(a - f).sum()) / volume if volume > 0 else math.nan


def mase(actual: ArrayLike, forecast: ArrayLike, scale: float) -> float:
    """Mean absolute scaled error: mean |actual - forecast| / `scale`.

    `scale` is the caller's in-sample mean absolute error of the seasonal naive forecast (e.g.
    same bucket one week earlier) computed on data <= the origin; < 1 beats that naive forecast.
    NaN when `scale` is not positive.
    """
    a, f = _pair(actual, forecast, ("actual", "forecast"))
    if not scale > 0:
        return math.nan
    return float(np.abs(a - f).mean()) / float(scale)


def bias(actual: ArrayLike, forecast: ArrayLike) -> float:
    """Relative bias: (sum forecast - sum actual) / sum |actual|.

    Positive = over-forecast (0.1 = 10 % too much in total); NaN when the actual volume is zero.
    """
    a, f = _pair(actual, forecast, ("actual", "forecast"))
    volume = float(np.abs(a).sum())
    return float((f - a).sum()) / volume if volume > 0 else math.nan


def pinball_loss(actual: ArrayLike, forecast: ArrayLike, q: float) -> float:
    """Mean pinball (quantile) loss of `forecast` as the q-quantile, in units of `actual`:
    sklearn's `mean_pinball_loss(actual, forecast, alpha=q)`. NaN for a NaN value.
    """
    if not 0 < q < 1:
        raise ValueError("q must lie strictly between 0 and 1")
    a, f = _pair(actual, forecast, ("actual", "forecast"))
    if np.isnan(a).any() or np.isnan(f).any():
        return math.nan
    return float(skm.mean_pinball_loss(a, f, alpha=q))


def interval_coverage(actual: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> float:
    """Share of actuals with lower <= actual <= upper (both ends inclusive)."""
    a, lo = _pair(actual, lower, ("actual", "lower"))
    _, hi = _pair(actual, upper, ("actual", "upper"))
    if (lo > hi).any():
        raise ValueError("lower must not exceed upper")
    return float(np.mean((a >= lo) & (a <= hi)))


def brier_skill_score(y_true: ArrayLike, y_prob: ArrayLike, y_reference: ArrayLike) -> float:
    """1 - Brier(y_prob) / Brier(y_reference): > 0 when the probabilities beat the reference
    (e.g. the base rate); NaN when the reference is perfect.
    """
    y, p = _binary(y_true, y_prob)
    _, r = _pair(y_true, y_reference, ("y_true", "y_reference"))
    reference = float(np.sum((r - y) ** 2))
    return 1.0 - float(np.sum((p - y) ** 2)) / reference if reference > 0 else math.nan


def bootstrap_brier_skill(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    y_reference: ArrayLike,
    groups: ArrayLike,
    n_resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(skill score, low, high): `brier_skill_score` with a percentile bootstrap interval that
    resamples whole groups (deals: the snapshots of one deal are not independent).
    """
    y, p = _binary(y_true, y_prob)
    _, r = _pair(y_true, y_reference, ("y_true", "y_reference"))
    _, codes = np.unique(np.asarray(groups).reshape(-1), return_inverse=True)
    n_groups = int(codes.max()) + 1
    model_sse = np.bincount(codes, weights=(p - y) ** 2, minlength=n_groups)
    reference_sse = np.bincount(codes, weights=(r - y) ** 2, minlength=n_groups)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_resamples)
    denominator = weights @ reference_sse
    with np.errstate(divide="ignore", invalid="ignore"):
        skills = 1.0 - (weights @ model_sse) / denominator
    skills = skills[np.isfinite(skills)]
    point = brier_skill_score(y, p, r)
    if skills.size == 0:
        return point, math.nan, math.nan
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(skills, [tail, 1.0 - tail])
    return point, float(low), float(high)


# --- count forecasts by stratum (demand) ------------------------------------------------------

DEMAND_STRATA: tuple[float, ...] = (0.5, 2.0)
"""Default edges (units per bucket) of the expected-demand strata: < 0.5, 0.5-2, >= 2."""


def stratum_label(k: int, edges: tuple[float, ...]) -> str:
    """Name of stratum k of `edges` in metric keys: 'lt0.5', '0.5to2', 'ge2'."""

    def num(x: float) -> str:
        return f"{x:g}"

    if k == 0:
        return f"lt{num(edges[0])}"
    if k == len(edges):
        return f"ge{num(edges[-1])}"
    return f"{num(edges[k - 1])}to{num(edges[k])}"


def quantile_report(
    actual: ArrayLike,
    expected: ArrayLike,
    p10: ArrayLike,
    p50: ArrayLike,
    p90: ArrayLike,
    strata: tuple[float, ...] = DEMAND_STRATA,
) -> dict[str, float]:
    """The demand forecast's scorecard on the evaluated cells, one function for backtests,
    training and tests.

    `wape` / `bias` of P50, `wape_mean` / `bias_mean` of `expected`; `pinball_p10/p50/p90`;
    `coverage_p10_p90` overall, `coverage_<stratum>` and `rows_<stratum>` per stratum of
    *expected* demand (edges `strata`, units per bucket: a forecast-side split, so it can be
    computed before the actuals are known), and `coverage_sale` on cells with a sale (actual
    > 0). A stratum without rows is NaN. Zero cells alone can supply an 80 % coverage, hence
    the strata.
    """
    y, mean = _pair(actual, expected, ("actual", "expected"))
    lo, mid = _pair(p10, p50, ("p10", "p50"))
    _, hi = _pair(p10, p90, ("p10", "p90"))
    if y.shape != lo.shape:
        raise ValueError(f"actual and p10 differ in length: {y.size} vs {lo.size}")
    inside = (y >= lo) & (y <= hi)
    out = {
        "wape": wape(y, mid),
        "bias": bias(y, mid),
        "wape_mean": wape(y, mean),
        "bias_mean": bias(y, mean),
        "pinball_p10": pinball_loss(y, lo, 0.1),
        "pinball_p50": pinball_loss(y, mid, 0.5),
        "pinball_p90": pinball_loss(y, hi, 0.9),
        "coverage_p10_p90": float(np.mean(inside)),
    }
    index = np.digitize(mean, np.asarray(strata, dtype=np.float64))
    for k in range(len(strata) + 1):
        label = stratum_label(k, strata)
        rows = index == k
        out[f"coverage_{label}"] = float(np.mean(inside[rows])) if rows.any() else math.nan
        out[f"rows_{label}"] = float(rows.sum())
    sale = y > 0
    out["coverage_sale"] = float(np.mean(inside[sale])) if sale.any() else math.nan
    return out
