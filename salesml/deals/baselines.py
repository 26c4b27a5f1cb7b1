"""Baselines the deal-win model must beat: the base rate, and a logistic regression on the
deal's static attributes (log amount, product, region), fitted with scikit-learn.

Both learn only from the training snapshots they are given (known at the origin); category
levels come from those rows, so an unseen (or missing) level at prediction is the reference
level (the first level in sorted order, dropped from the one-hot design).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import polars as pl
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

STATIC_CATEGORICAL = ("product", "region")
AMOUNT_COLUMNS = ("log_amount", "amount_missing")


@dataclass
class BaseRateBaseline:
    """Predicts the training win rate for every deal."""

    rate_: float = 0.5

    def fit(self, y: np.ndarray) -> BaseRateBaseline:
        """Learn the win rate: the mean of the 0/1 labels `y`."""
        self.rate_ = float(np.mean(y))
        return self

    def predict(self, n: int) -> np.ndarray:
        """The learned win rate, `n` times."""
        return np.full(n, self.rate_)


def static_design(frame: pl.DataFrame, amount_fill: float) -> pl.DataFrame:
    """The baseline's inputs: log1p(amount) with a missing amount as `amount_fill` (a log1p
    value) plus a 0/1 missing flag, and product and region as text (null stays null).
    """
    amount = pl.col("amount").cast(pl.Float64)
    return frame.select(
        amount.fill_null(float(np.expm1(amount_fill))).log1p().alias("log_amount"),
        amount.is_null().cast(pl.Float64).alias("amount_missing"),
        *[pl.col(c).cast(pl.String) for c in STATIC_CATEGORICAL],
    )


def static_logit_pipeline(levels: dict[str, list[str]]) -> Pipeline:
    """One-hot product and region (first sorted level = reference, unknown levels all zeros)
    next to the amount columns, then an unpenalised logistic regression (C = inf: maximum
    likelihood, as statsmodels' Logit gave).
    """
    encoder = OneHotEncoder(
        categories=[levels[c] for c in STATIC_CATEGORICAL],
        drop="first",
        handle_unknown="ignore",
        sparse_output=False,
    )
    design = ColumnTransformer(
        [
            ("amount", "passthrough", list(AMOUNT_COLUMNS)),
            ("onehot", encoder, list(STATIC_CATEGORICAL)),
        ],
        sparse_threshold=0.0,
    )
    return Pipeline([("design", design), ("logit", LogisticRegression(C=np.inf, max_iter=1000))])


@dataclass
class StaticLogitBaseline:
    """Logistic regression on log1p(amount) (+ missing flag) and one-hot product and region."""

    amount_fill_: float = 0.0
    pipeline_: Pipeline | None = None
    constant_: float | None = None  # one class in training: the rate alone is the MLE

    def fit(self, frame: pl.DataFrame, y: np.ndarray) -> StaticLogitBaseline:
        """Fit on the training deals (amount fill = training median); one class: its rate alone."""
        amount = frame.get_column("amount").cast(pl.Float64)
        self.amount_fill_ = float(np.log1p(amount.drop_nulls().median() or 0.0))  # type: ignore[arg-type]
        if np.unique(y).size < 2:
            self.constant_ = float(np.clip(np.mean(y), 1e-6, 1 - 1e-6))
            self.pipeline_ = None
            return self
        levels = {
            # a column without any level gets a placeholder no value equals (null is unknown)
            c: sorted(frame.get_column(c).cast(pl.String).drop_nulls().unique().to_list()) or [""]
            for c in STATIC_CATEGORICAL
        }
        self.constant_ = None
        self.pipeline_ = static_logit_pipeline(levels)
        with _unknown_levels_are_reference():
            self.pipeline_.fit(static_design(frame, self.amount_fill_), y.astype(np.int64))
        return self

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        """Probability of a win per row of `frame`."""
        if self.constant_ is not None:
            return np.full(frame.height, self.constant_)
        if self.pipeline_ is None:
            raise RuntimeError("fit the baseline first")
        with _unknown_levels_are_reference():
            proba = self.pipeline_.predict_proba(static_design(frame, self.amount_fill_))
        return np.asarray(proba[:, 1], dtype=np.float64)


@contextmanager
def _unknown_levels_are_reference() -> Iterator[None]:
    """Silence the encoder's note that unknown (or null) levels become all zeros: that is the
    intended reading (the reference level), not a problem with the data.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Found unknown categories", category=UserWarning)
        yield
