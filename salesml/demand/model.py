"""The global demand model: LightGBM mean and median over all series, whole-unit P10/P50/P90.

Mean (`expected`): LightGBM with a Tweedie (default) or Poisson objective, a log link: the
expected units per bucket, the number to sum over buckets, SKUs or days.

Median (P50): a second LightGBM with the quantile objective at 0.5 on the same features and
targets (`median_model`), rounded to whole units. For intermittent counts the median is the
point that minimises absolute error (WAPE): measured on the pizza year (4 origins, 2015-09-01 ..
12-01), the whole-unit median of a negative binomial around the mean scored WAPE 0.93, the
quantile-objective median 0.89. With `median_model` off, P50 is that negative-binomial median.

Interval (P10, P90): whole units of a negative binomial around the mean, calibrated per bin
of expected demand (Mondrian split-conformal on held-out rows known at the origin; closed
slots are 0). The bins are the reported strata (`interval_strata`, default < 0.5, 0.5-2, >= 2
units per bucket) split further at `interval_bins` (default 0.35). In each bin the dispersion
is estimated by moments (Var = mean + d * mean^2) and the level pair [a, 1 - a] is chosen so
that the share of held-out actuals inside [P10, P90] is as close as the integer steps allow to
`interval_coverage` (0.8). Pooled over all cells, the zeros of sparse cells alone would supply
the 80 % and busy cells would be missed (issue 10); per bin each level of demand gets its own.

Three guards, each from a measured failure on the pizza year (4 origins 2015-09-01 .. 12-01,
one held-out week each; figures: P10-P90 coverage overall / < 0.5 / 0.5-2 / >= 2 / cells with
a sale). Before: 0.83 / 0.83 / 0.82 / 0.91 / 0.39.
- Thin bins borrow (`interval_min_rows`, 200): a held-out week has 0-28 cells with expected
  >= 2 (5 in late August, none in late November), so that bin was calibrated on a handful of
  rows or fell back to a fixed level 0.1; it now uses the 200 held-out rows nearest in
  expected demand.
- Event days are left out (`interval_event_ratio`, 2): the week before 2015-12-01 held
  Thanksgiving and the day after (2015-11-26/27), which sold 2.0-2.2x the forecast; calibrating
  on them set the dispersion to 1.3-2.0 (other weeks 0.001-0.74) and December's intervals to
  [0, 4..6], covering 0.92 of the 0.5-2 stratum and all >= 2 cells. Both guards: 0.82 / 0.82
  / 0.80 / 0.85 / 0.36.
- The 0.35 bin: cells with a 30-40 % chance of a sale are a bin of their own, where [0, 0]
  covers only ~0.7 so the calibration gives part of them [0, 1]: 0.84 / 0.85 / 0.80 / 0.85 /
  0.43, pinball at P90 0.207 -> 0.187. The edge trades sale-cell coverage for overall coverage
  (edge 0.2: 0.85 overall, 0.47 sale; 0.45: 0.83, 0.38); 0.35 keeps overall <= 0.85 with room.
  With P10 = 0 wherever a zero is likely, coverage of sale cells cannot pass ~0.45 while the
  overall coverage stays <= 0.85 (the zeros alone cover 0.73 of pizza's cells), and ~0.63
  while each stratum stays <= 0.90: `benchmarks/bench_demand_peers.py` prints both bounds.

Consistency, by construction: P10 <= P50 <= P90, all whole units, and P10 <= expected <
P90 + 1. `expected` lies inside [P10, P90] except when the mean is fractional and above the
interval's top unit, e.g. expected 0.3 with interval [0, 0]: "most likely nothing sells" is
the honest 80 % interval of such a cell, and its mean is still 0.3. The object pickles
(LightGBM boosters do), so MLflow stores it as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from pydantic import BaseModel
from sklearn.base import BaseEstimator

if TYPE_CHECKING:
    import lightgbm as lgb
    import pandas as pd

from salesml.estimator import params_from_settings

_MIN_INV_SIZE = 1e-3  # NB 1/size floor: ~Poisson, and scipy's NB is far faster than its Poisson
_CALIBRATION_SAMPLE = 30_000  # rows per stratum used by the level search (+-0.005 coverage)
_BISECTION_STEPS = 18
DEFAULT_STRATA = (0.5, 2.0)
DEFAULT_BINS: tuple[float, ...] = (0.35,)
DEFAULT_MIN_STRATUM_ROWS = 200
DEFAULT_EVENT_RATIO = 2.0


@dataclass
class Calibration:
    """What the held-out rows said, per stratum of expected demand (Mondrian calibration).

    `edges`: stratum k holds means in [edges[k-1], edges[k]) (open-ended at both ends);
    `inv_sizes` / `lower_levels` / `coverages` / `stratum_rows`: one value per stratum.
    `inv_size`, `lower_level`, `coverage`: pooled summaries (row-weighted), for logs and gates.
    """

    inv_size: float = _MIN_INV_SIZE
    lower_level: float = 0.1
    coverage: float = float("nan")
    rows: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    edges: tuple[float, ...] = DEFAULT_STRATA
    inv_sizes: tuple[float, ...] = ()
    lower_levels: tuple[float, ...] = ()
    coverages: tuple[float, ...] = ()
    stratum_rows: tuple[int, ...] = ()

    def per_row(self, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(1/size, lower level) of each row's stratum (pooled values if not calibrated)."""
        if not self.inv_sizes:
            return (np.full(mean.shape, self.inv_size), np.full(mean.shape, self.lower_level))
        index = stratum_index(mean, self.edges)
        return np.asarray(self.inv_sizes)[index], np.asarray(self.lower_levels)[index]

    def variance(self, mean: np.ndarray) -> np.ndarray:
        """Predictive variance per bucket: mean + d * mean^2 with the stratum's dispersion d."""
        mean = np.asarray(mean, dtype=np.float64)
        inv_size, _ = self.per_row(mean)
        variance: np.ndarray = mean + inv_size * mean**2
        return variance

    def quantiles(
        self, mean: np.ndarray, median: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Whole-unit (P10, P50, P90) from predicted means and (optionally) a median model's
        raw output; P10 <= P50 <= P90 and P10 <= mean < P90 + 1 by construction.
        """
        mean = np.maximum(np.asarray(mean, dtype=np.float64), 0.0)
        inv_size, lower = self.per_row(mean)
        p10 = count_quantile(mean, inv_size, lower)
        p90 = count_quantile(mean, inv_size, 1.0 - lower)
        if median is None:
            p50 = count_quantile(mean, inv_size, np.full(mean.shape, 0.5))
        else:
            p50 = np.floor(np.maximum(np.asarray(median, dtype=np.float64), 0.0) + 0.5)
        p10 = np.minimum(np.minimum(p10, p50), np.floor(mean))
        p90 = np.maximum(np.maximum(p90, p50), np.floor(mean))
        return p10, p50, p90


def stratum_index(mean: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Stratum of each expected value: 0 below edges[0], k for edges[k-1] <= mean < edges[k]."""
    return np.digitize(np.asarray(mean, dtype=np.float64), np.asarray(edges, dtype=np.float64))


# What models pickled by older releases lack, with the value that reproduces their behaviour
# (they were trained before these settings existed); filled in on unpickling.
_PICKLE_DEFAULTS: dict[str, Any] = {
    "interval_bins": (),
    "min_stratum_rows": 0,
    "event_ratio": 0.0,
    "refit_decay": 0.5,
    "median_booster_": None,
}
# Settings names of the parameters named otherwise here (`params_from_settings`).
_SETTINGS_NAMES = {"interval_min_rows": "min_stratum_rows", "interval_event_ratio": "event_ratio"}


class DemandModel(BaseEstimator):  # type: ignore[misc]
    """LightGBM mean model + negative-binomial quantiles with a calibrated interval level.

    A scikit-learn estimator: every hyper-parameter is an `__init__` argument stored as given
    (`get_params`, `set_params`, `sklearn.base.clone` work); the defaults equal
    `DemandSettings`' (a test checks), and `from_settings` reads them from the settings by
    name. Everything learned is set by `fit` (no method changes a fitted model): the mean
    booster (`booster_`), the median booster (`median_booster_`, with `median_model`) and the
    interval calibration it is given (`calibration_`, learned by `learn_calibration` from a
    model's held-out predictions).
    """

    def __init__(
        self,
        objective: str = "tweedie",
        tweedie_variance_power: float = 1.5,
        num_leaves: int = 15,
        learning_rate: float = 0.1,
        n_estimators: int = 150,
        min_data_in_leaf: int = 50,
        feature_fraction: float = 0.9,
        num_threads: int = 2,
        seed: int = 42,
        interval_coverage: float = 0.8,
        median_model: bool = True,
        interval_strata: tuple[float, ...] = DEFAULT_STRATA,
        interval_bins: tuple[float, ...] = DEFAULT_BINS,
        min_stratum_rows: int = DEFAULT_MIN_STRATUM_ROWS,
        event_ratio: float = DEFAULT_EVENT_RATIO,
        refit_decay: float = 0.5,
    ) -> None:
        self.objective = objective
        self.tweedie_variance_power = tweedie_variance_power
        self.num_leaves = num_leaves
        self.learning_rate = learning_rate
        self.n_estimators = n_estimators
        self.min_data_in_leaf = min_data_in_leaf
        self.feature_fraction = feature_fraction
        self.num_threads = num_threads
        self.seed = seed
        self.interval_coverage = interval_coverage
        self.median_model = median_model
        self.interval_strata = interval_strata
        self.interval_bins = interval_bins
        self.min_stratum_rows = min_stratum_rows
        self.event_ratio = event_ratio
        self.refit_decay = refit_decay

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle, also models pickled by older releases (see `_PICKLE_DEFAULTS`)."""
        super().__setstate__(_PICKLE_DEFAULTS | state)

    @classmethod
    def from_settings(cls, demand: BaseModel, **overrides: Any) -> DemandModel:
        """An unfitted model configured from the `demand` settings (`overrides` win)."""
        return cls(**params_from_settings(cls, demand, renames=_SETTINGS_NAMES, **overrides))

    def calibration_edges(self) -> tuple[float, ...]:
        """Edges of the calibration bins: the reported strata plus the finer `interval_bins`."""
        merged = {float(e) for e in (*self.interval_strata, *self.interval_bins) if e > 0}
        return tuple(sorted(merged))

    def lgb_params(self) -> dict[str, Any]:
        """The mean model's LightGBM parameters (deterministic, `num_threads` threads)."""
        params: dict[str, Any] = {
            "objective": self.objective,
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "num_threads": self.num_threads,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
        }
        if self.objective == "tweedie":
            params["tweedie_variance_power"] = self.tweedie_variance_power
        return params

    def median_params(self) -> dict[str, Any]:
        """The median model's LightGBM parameters: the mean model's, quantile objective at 0.5."""
        params = {k: v for k, v in self.lgb_params().items() if k != "tweedie_variance_power"}
        return params | {"objective": "quantile", "alpha": 0.5}

    # --- fitting ---------------------------------------------------------------------------

    def fit(
        self,
        features: pl.DataFrame,
        target: np.ndarray | pl.Series,
        *,
        calibration: Calibration | None = None,
        trees_from: DemandModel | None = None,
    ) -> DemandModel:
        """Fit on `features` (numeric columns only; their order is kept): the mean model, then
        the median model (quantile objective at 0.5) on the same rows when `median_model`.

        `calibration`: the interval calibration to keep, learned earlier from held-out rows by
        a model of the same configuration (`learn_calibration`); default: uncalibrated.
        `trees_from`: a fitted model whose mean trees are kept; their leaf values are
        re-estimated on these rows, new = `refit_decay` * old + (1 - decay) * fitted
        (LightGBM `Booster.refit`; decay 1 keeps them as they are). Default: new trees.
        """
        import lightgbm as lgb

        self.feature_names_ = list(features.columns)
        matrix = features.to_numpy()
        label = np.asarray(target, dtype=np.float64)
        if trees_from is None:
            data = lgb.Dataset(
                matrix, label=label, feature_name=self.feature_names_, free_raw_data=True
            )
            self.booster_ = lgb.train(self.lgb_params(), data, num_boost_round=self.n_estimators)
        elif self.refit_decay >= 1.0:
            self.booster_ = trees_from.booster_
        else:
            self.booster_ = trees_from.booster_.refit(matrix, label, decay_rate=self.refit_decay)
        self.median_booster_: lgb.Booster | None = None
        if self.median_model:
            data = lgb.Dataset(
                matrix, label=label, feature_name=self.feature_names_, free_raw_data=True
            )
            self.median_booster_ = lgb.train(
                self.median_params(), data, num_boost_round=self.n_estimators
            )
        self.calibration_ = calibration or Calibration(edges=self.calibration_edges())
        self.train_rows_ = features.height
        return self

    def learn_calibration(
        self, mean: np.ndarray, actual: np.ndarray, days: np.ndarray | None = None
    ) -> Calibration:
        """The interval calibration (for `fit(calibration=)`) from held-out (mean, actual) pairs
        of open cells: per calibration bin of `mean`, dispersion and interval level (see module
        doc). `days` (a day key per row, optional): rows of event days (total actual off the
        total mean by more than `event_ratio` either way) are left out. A bin without rows
        takes the pooled values. Reads only hyper-parameters: any unfitted model will do.
        """
        mean = np.asarray(mean, dtype=np.float64)
        actual = np.asarray(actual, dtype=np.float64)
        if days is not None and mean.size:
            keep = ~event_days(mean, actual, np.asarray(days), self.event_ratio)
            mean, actual = mean[keep], actual[keep]
        edges = self.calibration_edges()
        if mean.size == 0:
            return Calibration(edges=edges)
        inv_sizes, levels, coverages, counts = _calibrate_bins(
            mean, actual, edges, self.min_stratum_rows, self.interval_coverage, self.seed
        )
        weights = np.asarray(counts, dtype=np.float64)
        filled = weights > 0
        return Calibration(
            inv_size=_moment_inv_size(mean, actual),
            lower_level=float(np.average(np.asarray(levels)[filled], weights=weights[filled])),
            coverage=float(np.average(np.asarray(coverages)[filled], weights=weights[filled])),
            rows=int(mean.size),
            edges=edges,
            inv_sizes=tuple(inv_sizes),
            lower_levels=tuple(levels),
            coverages=tuple(coverages),
            stratum_rows=tuple(counts),
        )

    # --- predicting ------------------------------------------------------------------------

    def feature_matrix(self, features: pl.DataFrame | pd.DataFrame) -> np.ndarray:
        """The model's feature columns in training order (`feature_names_`) as a numpy matrix;
        `features` polars (dtypes kept) or pandas (as float64).
        """
        if isinstance(features, pl.DataFrame):
            return features.select(self.feature_names_).to_numpy()
        return np.asarray(features[self.feature_names_], dtype=np.float64)

    def predict(self, features: pl.DataFrame | pd.DataFrame) -> np.ndarray:
        """Expected units per bucket (the mean); `features` polars or pandas with the columns."""
        matrix = self.feature_matrix(features)
        return np.asarray(self.booster_.predict(matrix), dtype=np.float64)

    def predict_median(self, features: pl.DataFrame | pd.DataFrame) -> np.ndarray | None:
        """The median model's raw prediction (units), or None without a median model."""
        if self.median_booster_ is None:
            return None
        matrix = self.feature_matrix(features)
        return np.asarray(self.median_booster_.predict(matrix), dtype=np.float64)

    def variance(self, mean: np.ndarray) -> np.ndarray:
        """Predictive variance per bucket: mean + d * mean^2 with the stratum's dispersion d."""
        return self.calibration_.variance(mean)

    def predict_quantiles(
        self, mean: np.ndarray, median: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Whole-unit (P10, P50, P90) from predicted means and (optionally) the median model's
        raw output (`Calibration.quantiles` of the fitted calibration).
        """
        return self.calibration_.quantiles(mean, median)

    def contributions(self, features: pl.DataFrame) -> np.ndarray:
        """Exact TreeSHAP (n, f + 1) in log space (log of the mean); last column = base."""
        from salesml import explain

        return explain.shap_contributions(self.booster_, self.feature_matrix(features))

    def feature_importance(self) -> pl.DataFrame:
        """Total split gain per feature of the mean booster, largest first."""
        gain = self.booster_.feature_importance(importance_type="gain")
        return pl.DataFrame({"feature": self.feature_names_, "gain": gain.astype(np.float64)}).sort(
            "gain", descending=True
        )


def to_unit_contributions(contrib: np.ndarray) -> np.ndarray:
    """Log-space SHAP of a log-link model -> units that add up to the mean (documented scaling).

    Each row's log contributions phi_j are multiplied by L = (mu - b) / (log mu - log b), the
    logarithmic mean of the prediction mu = exp(sum phi + base) and the base b = exp(base). Then
    sum_j phi_j * L = mu - b exactly: contributions in expected units per bucket relative to the
    model's average bucket, with the signs and ranking of the exact log-space SHAP values (a
    proportional rescaling, not Shapley values of mu itself). Last column: b, in units.
    """
    values = np.asarray(contrib, dtype=np.float64)
    base_log = values[:, -1]
    delta = values[:, :-1].sum(axis=1)
    base = np.exp(base_log)
    mean = np.exp(base_log + delta)
    tiny = np.abs(delta) < 1e-9
    scale = np.where(tiny, base, (mean - base) / np.where(tiny, 1.0, delta))
    return np.column_stack([values[:, :-1] * scale[:, None], base])


def event_days(mean: np.ndarray, actual: np.ndarray, days: np.ndarray, ratio: float) -> np.ndarray:
    """Rows of days whose total actual is more than `ratio` times, or less than 1 / `ratio`
    times, the total mean: events the mean model did not see coming (Thanksgiving and the day
    after in pizza's last November week sold 2.0-2.2x the forecast). Calibrating on them would
    widen every interval of the next week (dispersion 0.3-0.5 -> 1.3-2.0 per stratum). All
    False when that would leave out more than half of the rows.
    """
    if ratio <= 1.0 or mean.size == 0:
        return np.zeros(mean.shape, dtype=bool)
    keys, inverse = np.unique(days, return_inverse=True)
    total_mean = np.bincount(inverse, weights=mean, minlength=keys.size)
    total_actual = np.bincount(inverse, weights=actual, minlength=keys.size)
    scaled = np.maximum(total_mean, 1e-9) * ratio
    event = (total_actual > scaled) | (total_actual * ratio < total_mean)
    rows = event[inverse]
    return rows if rows.mean() <= 0.5 else np.zeros(mean.shape, dtype=bool)


def _neighbour_rows(
    mean: np.ndarray, order: np.ndarray, bounds: tuple[float, float], min_rows: int
) -> np.ndarray:
    """Held-out rows of the bin [lo, hi) of `mean`, widened to the `min_rows` rows nearest in
    rank (a window of the sorted means centred on the bin, empty bins included), so a thin
    bin (e.g. 5 busy cells in a week) is not calibrated on a handful of rows.
    """
    ordered = mean[order]
    start, stop = np.searchsorted(ordered, bounds, side="left")
    if stop - start >= min_rows or mean.size == 0:
        return order[start:stop]
    take = min(min_rows, mean.size)
    first = int(np.clip(round(0.5 * (start + stop) - take / 2), 0, mean.size - take))
    return order[first : first + take]


def _calibrate_bins(
    mean: np.ndarray,
    actual: np.ndarray,
    edges: tuple[float, ...],
    min_rows: int,
    coverage: float,
    seed: int,
) -> tuple[list[float], list[float], list[float], list[int]]:
    """Per bin of `edges` (open-ended at both ends): (1/size, lower level, coverage, rows in
    the bin), each bin calibrated on its rows widened to `min_rows` neighbours (sampled down to
    _CALIBRATION_SAMPLE); a bin with no rows at all takes the pooled 1/size and level 0.1.
    """
    pooled_inv = _moment_inv_size(mean, actual)
    index = stratum_index(mean, edges)
    order = np.argsort(mean, kind="stable")
    bins = (-np.inf, *edges, np.inf)
    rng = np.random.default_rng(seed)
    inv_sizes: list[float] = []
    levels: list[float] = []
    coverages: list[float] = []
    counts: list[int] = []
    for k in range(len(edges) + 1):
        counts.append(int(np.sum(index == k)))
        rows = _neighbour_rows(mean, order, (bins[k], bins[k + 1]), min_rows)
        if rows.size == 0:
            inv_sizes.append(pooled_inv)
            levels.append(0.1)
            coverages.append(float("nan"))
            continue
        if rows.size > _CALIBRATION_SAMPLE:
            rows = rng.choice(rows, _CALIBRATION_SAMPLE, replace=False)
        m, y = mean[rows], actual[rows]
        inv = _moment_inv_size(m, y)
        level, covered = _calibrate_level(m, y, inv, coverage)
        inv_sizes.append(inv)
        levels.append(level)
        coverages.append(covered)
    return inv_sizes, levels, coverages, counts


def _moment_inv_size(mean: np.ndarray, actual: np.ndarray) -> float:
    """Negative-binomial 1/size by moments: sum((y - m)^2 - m) / sum(m^2), floored."""
    denom = float(np.sum(mean**2))
    if denom <= 0:
        return _MIN_INV_SIZE
    value = float(np.sum((actual - mean) ** 2 - mean)) / denom
    return max(value, _MIN_INV_SIZE)


def nb_quantiles(
    mean: np.ndarray, inv_size: float, levels: tuple[float, ...]
) -> tuple[np.ndarray, ...]:
    """Quantiles at `levels` of the mid-point-jittered negative binomial (mean, 1/size).

    For level q with k = the integer q-quantile, the value is k - 1/2 + (q - F(k-1)) / P(k),
    clipped at 0: continuous and increasing in q and in the mean.
    """
    from scipy import stats

    mean = np.maximum(np.asarray(mean, dtype=np.float64), 1e-12)
    size = 1.0 / inv_size
    prob = size / (size + mean)
    out = []
    for level in levels:
        k = stats.nbinom.ppf(level, size, prob)
        below = np.where(k > 0, stats.nbinom.cdf(k - 1, size, prob), 0.0)
        mass = np.maximum(stats.nbinom.pmf(k, size, prob), 1e-300)
        value = k - 0.5 + np.clip((level - below) / mass, 0.0, 1.0)
        out.append(np.maximum(value, 0.0))
    return tuple(out)


def count_quantile(mean: np.ndarray, inv_size: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Whole-unit quantile at `level` of the negative binomial (mean, 1/size), per row: the
    smallest k with P(Y <= k) >= level.
    """
    from scipy import stats

    mean = np.maximum(np.asarray(mean, dtype=np.float64), 1e-12)
    size = 1.0 / np.asarray(inv_size, dtype=np.float64)
    value = stats.nbinom.ppf(level, size, size / (size + mean))
    quantile: np.ndarray = np.maximum(np.nan_to_num(value, nan=0.0), 0.0)
    return quantile


def _calibrate_level(
    mean: np.ndarray, actual: np.ndarray, inv_size: float, target: float
) -> tuple[float, float]:
    """Level a of the pair [a, 1 - a] whose whole-unit interval covers the rows closest to
    `target` (coverage falls by integer steps as a grows); returns (a, coverage).
    """

    def coverage(a: float) -> float:
        levels = np.full(mean.shape, a)
        lo = count_quantile(mean, np.full(mean.shape, inv_size), levels)
        hi = count_quantile(mean, np.full(mean.shape, inv_size), 1.0 - levels)
        return float(np.mean((actual >= lo) & (actual <= hi)))

    low, high = 1e-4, 0.4999  # coverage(low) is the widest, coverage(high) the narrowest
    cov_low, cov_high = coverage(low), coverage(high)
    if cov_low <= target:
        return low, cov_low
    if cov_high >= target:
        return high, cov_high
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (low + high)
        cov_mid = coverage(mid)
        if cov_mid >= target:
            low, cov_low = mid, cov_mid
        else:
            high, cov_high = mid, cov_mid
    if abs(cov_high - target) < abs(cov_low - target):
        return high, cov_high
    return low, cov_low
