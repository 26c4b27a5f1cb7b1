"""The global demand model: one LightGBM over all series, with calibrated P10/P50/P90.

Point model: LightGBM with a Tweedie (default) or Poisson objective, i.e. a log link: it predicts
the expected units per bucket, `mean`, for intermittent counts without a zero-inflation hack.

Quantiles: the demand in a bucket is taken as negative binomial with that mean and a dispersion
estimated on held-out backtest rows (method of moments: Var = mean + d * mean^2). Its quantiles
are read on the continuous ("mid-point jittered") version of the count, Y + U - 1/2 with U
uniform, so they vary smoothly with the mean instead of jumping between integers. P50 is the
0.5 quantile. The interval levels are then calibrated on the same held-out rows (split-conformal
on the level): P10/P90 are the quantiles at levels a and 1 - a, with `a` chosen by bisection so
that the share of held-out actuals inside [P10, P90] equals `interval_coverage` (0.8). For
discrete, often-zero demand a nominal 10%/90% pair would cover far more than 80% (a bucket
whose P90 is 1.3 covers every 0 and 1), hence the calibration. Coverage is checked again in
every backtest. The object pickles (LightGBM boosters do), so MLflow stores it as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from salesml.config import DemandSettings

_MIN_INV_SIZE = 1e-3  # NB 1/size floor: ~Poisson, and scipy's NB is far faster than its Poisson
_CALIBRATION_SAMPLE = 30_000  # rows used by the level search (enough for +-0.005 coverage)
_BISECTION_STEPS = 18


@dataclass
class Calibration:
    """What the held-out rows said: dispersion, the calibrated level and the coverage reached."""

    inv_size: float = _MIN_INV_SIZE
    lower_level: float = 0.1
    coverage: float = float("nan")
    rows: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


class DemandModel:
    """LightGBM mean model + negative-binomial quantiles with a calibrated interval level."""

    def __init__(
        self,
        objective: str = "tweedie",
        tweedie_variance_power: float = 1.2,
        num_leaves: int = 31,
        learning_rate: float = 0.05,
        n_estimators: int = 300,
        min_data_in_leaf: int = 50,
        feature_fraction: float = 0.9,
        num_threads: int = 2,
        seed: int = 42,
        interval_coverage: float = 0.8,
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

    @classmethod
    def from_settings(cls, demand: DemandSettings) -> DemandModel:
        return cls(
            objective=demand.objective,
            tweedie_variance_power=demand.tweedie_variance_power,
            num_leaves=demand.num_leaves,
            learning_rate=demand.learning_rate,
            n_estimators=demand.n_estimators,
            min_data_in_leaf=demand.min_data_in_leaf,
            feature_fraction=demand.feature_fraction,
            num_threads=demand.num_threads,
            seed=demand.seed,
            interval_coverage=demand.interval_coverage,
        )

    def lgb_params(self) -> dict[str, Any]:
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

    # --- fitting ---------------------------------------------------------------------------

    def fit(self, features: pl.DataFrame, target: np.ndarray | pl.Series) -> DemandModel:
        """Fit the mean model on `features` (numeric columns only; their order is kept)."""
        import lightgbm as lgb

        self.feature_names_ = list(features.columns)
        data = lgb.Dataset(
            features.to_numpy(),
            label=np.asarray(target, dtype=np.float64),
            feature_name=self.feature_names_,
            free_raw_data=True,
        )
        self.booster_ = lgb.train(self.lgb_params(), data, num_boost_round=self.n_estimators)
        self.calibration_ = Calibration()
        self.train_rows_ = features.height
        return self

    def refit_leaves(
        self, features: pl.DataFrame, target: np.ndarray | pl.Series, decay: float
    ) -> DemandModel:
        """Re-estimate every leaf value on (newer) data, keeping the tree structure: new value =
        decay * old + (1 - decay) * value fitted on `features` (LightGBM `Booster.refit`)."""
        matrix = features.select(self.feature_names_).to_numpy()
        self.booster_ = self.booster_.refit(
            matrix, np.asarray(target, dtype=np.float64), decay_rate=decay
        )
        self.train_rows_ = features.height
        return self

    def calibrate(self, mean: np.ndarray, actual: np.ndarray) -> DemandModel:
        """Estimate dispersion and the interval level from held-out (mean, actual) pairs."""
        mean = np.asarray(mean, dtype=np.float64)
        actual = np.asarray(actual, dtype=np.float64)
        if mean.size == 0:
            self.calibration_ = Calibration()
            return self
        if mean.size > _CALIBRATION_SAMPLE:
            pick = np.random.default_rng(self.seed).choice(mean.size, _CALIBRATION_SAMPLE, False)
            mean_s, actual_s = mean[pick], actual[pick]
        else:
            mean_s, actual_s = mean, actual
        inv_size = _moment_inv_size(mean, actual)
        lower = _calibrate_level(mean_s, actual_s, inv_size, self.interval_coverage)
        p10, _, p90 = nb_quantiles(mean_s, inv_size, (lower, 0.5, 1.0 - lower))
        coverage = float(np.mean((actual_s >= p10) & (actual_s <= p90)))
        self.calibration_ = Calibration(inv_size, lower, coverage, int(mean.size))
        return self

    # --- predicting ------------------------------------------------------------------------

    def _matrix(self, features: pl.DataFrame) -> np.ndarray:
        return features.select(self.feature_names_).to_numpy()

    def predict(self, features: Any) -> np.ndarray:
        """Expected units per bucket (the mean); `features` polars or pandas with the columns."""
        if isinstance(features, pl.DataFrame):
            matrix = self._matrix(features)
        else:
            matrix = np.asarray(features[self.feature_names_], dtype=np.float64)
        return np.asarray(self.booster_.predict(matrix), dtype=np.float64)

    def predict_quantiles(self, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(P10, P50, P90) in units from predicted means, P10 <= P50 <= P90 by construction."""
        lower = self.calibration_.lower_level
        p10, p50, p90 = nb_quantiles(mean, self.calibration_.inv_size, (lower, 0.5, 1.0 - lower))
        return p10, p50, p90

    def contributions(self, features: pl.DataFrame) -> np.ndarray:
        """Exact TreeSHAP (n, f + 1) in log space (log of the mean); last column = base."""
        from salesml import explain

        return explain.shap_contributions(self.booster_, self._matrix(features))

    def feature_importance(self) -> pl.DataFrame:
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


def _calibrate_level(mean: np.ndarray, actual: np.ndarray, inv_size: float, target: float) -> float:
    """Smallest-width symmetric level pair [a, 1 - a] whose coverage on the rows is `target`."""

    def coverage(a: float) -> float:
        lo, hi = nb_quantiles(mean, inv_size, (a, 1.0 - a))
        return float(np.mean((actual >= lo) & (actual <= hi)))

    low, high = 1e-4, 0.4999  # coverage(low) is the widest, coverage(high) the narrowest
    if coverage(low) <= target:
        return low
    if coverage(high) >= target:
        return high
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (low + high)
        if coverage(mid) >= target:
            low = mid
        else:
            high = mid
    return low
