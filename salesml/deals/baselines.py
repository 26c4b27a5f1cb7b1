"""Baselines the deal-win model must beat: the base rate, and a logistic regression on the
deal's static attributes (log amount, product, region), fitted with statsmodels.

Both learn only from the training snapshots they are given (known at the origin); category
levels come from those rows, so an unseen level at prediction is the reference level.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

STATIC_CATEGORICAL = ("product", "region")


@dataclass
class BaseRateBaseline:
    """Predicts the training win rate for every deal."""

    rate_: float = 0.5

    def fit(self, y: np.ndarray) -> BaseRateBaseline:
        self.rate_ = float(np.mean(y))
        return self

    def predict(self, n: int) -> np.ndarray:
        return np.full(n, self.rate_)


@dataclass
class StaticLogitBaseline:
    """Logistic regression on log1p(amount) (+ missing flag) and one-hot product and region."""

    levels_: dict[str, list[str]] = field(default_factory=dict)
    amount_fill_: float = 0.0
    params_: np.ndarray | None = None

    def fit(self, frame: pl.DataFrame, y: np.ndarray) -> StaticLogitBaseline:
        import statsmodels.api as sm

        self.levels_ = {
            c: sorted(frame.get_column(c).drop_nulls().unique().to_list())[1:]  # first = reference
            for c in STATIC_CATEGORICAL
        }
        amount = frame.get_column("amount").cast(pl.Float64)
        self.amount_fill_ = float(np.log1p(amount.drop_nulls().median() or 0.0))  # type: ignore[arg-type]
        design = self._design(frame)
        result = sm.Logit(y.astype(np.float64), design).fit(method="lbfgs", maxiter=500, disp=False)
        self.params_ = np.asarray(result.params, dtype=np.float64)
        return self

    def _design(self, frame: pl.DataFrame) -> np.ndarray:
        amount = frame.get_column("amount").cast(pl.Float64)
        columns = [
            np.ones(frame.height),
            np.log1p(amount.fill_null(float(np.expm1(self.amount_fill_))).to_numpy()),
            amount.is_null().cast(pl.Float64).to_numpy(),
        ]
        for c, levels in self.levels_.items():
            values = frame.get_column(c)
            columns += [
                (values == level).fill_null(False).cast(pl.Float64).to_numpy() for level in levels
            ]
        return np.column_stack(columns)

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        if self.params_ is None:
            raise RuntimeError("fit the baseline first")
        z = self._design(frame) @ self.params_
        return 0.5 * (1.0 + np.tanh(0.5 * z))
