"""Baselines the deal-win model must beat: the base rate, and a logistic regression on the
deal's static attributes (log amount, product, region), fitted with scikit-learn.

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
        from sklearn.linear_model import LogisticRegression

        self.levels_ = {
            c: sorted(frame.get_column(c).drop_nulls().unique().to_list())[1:]  # first = reference
            for c in STATIC_CATEGORICAL
        }
        amount = frame.get_column("amount").cast(pl.Float64)
        self.amount_fill_ = float(np.log1p(amount.drop_nulls().median() or 0.0))  # type: ignore[arg-type]
        design = self._design(frame)
        if np.unique(y).size < 2:  # one class: the intercept alone is the maximum likelihood
            rate = float(np.clip(np.mean(y), 1e-6, 1 - 1e-6))
            self.params_ = np.zeros(design.shape[1])
            self.params_[0] = np.log(rate / (1 - rate))
            return self
        # unpenalised maximum likelihood, as statsmodels' Logit gave, at a fraction of the time
        fitted = LogisticRegression(C=np.inf, fit_intercept=False, max_iter=1000)
        fitted.fit(design, y.astype(np.int64))
        self.params_ = np.asarray(fitted.coef_[0], dtype=np.float64)
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
