"""`DealWinModel`: LightGBM win classifier + out-of-sample calibration, sklearn-shaped.

Fit splits the labelled snapshots by when each deal's outcome became known (`order`, the
deal's closed_at): the earliest-closing deals train the booster, the next slice decides the
number of trees (early stopping), and the latest slice fits the calibrator (isotonic or Platt)
on the booster's raw score. All snapshots of a deal fall in one slice, so no deal's label is
seen by both the booster and the calibrator (`slice_of_` records which rows went where).

Contributions (`contributions`) are exact TreeSHAP values in the booster's raw log-odds space,
before calibration: each row's contributions plus the base value equal `predict_raw`. The
calibrated probability is a monotone function of that raw score.

Categorical features are strings in the input; their vocabularies are learned in `fit` (from
the training rows only) and applied as integer codes (unknown or null -> missing), because
LightGBM must never see polars strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl

from salesml.deals.features import FeatureSpec

Calibration = Literal["isotonic", "platt"]
PROBABILITY_FLOOR = 1e-4
"""Calibrated probabilities are kept in [floor, 1 - floor] so a log loss is never infinite."""


class InsufficientDataError(ValueError):
    """Too few won or lost examples (or slices too thin) to train a model worth trusting."""


@dataclass(frozen=True)
class SliceSummary:
    """How many rows / wins each slice of a fit got, and where the slices start."""

    train_rows: int
    valid_rows: int
    calibration_rows: int
    train_wins: int
    valid_wins: int
    calibration_wins: int
    valid_from: str
    calibration_from: str


class DealWinModel:
    """Calibrated probability that an open deal will be won.

    Configured in `__init__` (stored as given), learned in `fit`; learned state ends in `_`:
    `booster_`, `calibrator_`, `feature_names_`, `categorical_features_`, `categories_`,
    `best_iteration_`, `base_rate_`, `slices_`.
    """

    def __init__(
        self,
        feature_spec: FeatureSpec | None = None,
        n_estimators: int = 400,
        learning_rate: float = 0.08,
        num_leaves: int = 15,
        max_depth: int = 5,
        min_child_samples: int = 40,
        subsample: float = 0.7,
        max_bin: int = 63,
        early_stopping_rounds: int = 30,
        calibration: Calibration = "isotonic",
        valid_fraction: float = 0.15,
        calibration_fraction: float = 0.25,
        health_bands: dict[str, float] | None = None,
        seed: int = 42,
        num_threads: int = 2,
    ) -> None:
        self.feature_spec = feature_spec
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.max_depth = max_depth
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.max_bin = max_bin
        self.early_stopping_rounds = early_stopping_rounds
        self.calibration = calibration
        self.valid_fraction = valid_fraction
        self.calibration_fraction = calibration_fraction
        self.health_bands = health_bands
        self.seed = seed
        self.num_threads = num_threads

    # --- configuration --------------------------------------------------------------------

    def lgb_params(self) -> dict[str, Any]:
        """LightGBM parameters: deterministic given `seed` (and independent of thread count)."""
        return {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "min_child_samples": self.min_child_samples,
            "max_bin": self.max_bin,
            "bagging_fraction": self.subsample,
            "bagging_freq": 1 if self.subsample < 1.0 else 0,
            "bagging_seed": self.seed,
            "feature_fraction": 0.8,
            "feature_fraction_seed": self.seed,
            "lambda_l2": 1.0,
            "cat_smooth": 10.0,
            "max_cat_to_onehot": 8,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
        }

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters as given (for logging); the feature spec as a plain dict."""
        return {
            "n_estimators": self.n_estimators,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "min_child_samples": self.min_child_samples,
            "subsample": self.subsample,
            "max_bin": self.max_bin,
            "early_stopping_rounds": self.early_stopping_rounds,
            "calibration": self.calibration,
            "valid_fraction": self.valid_fraction,
            "calibration_fraction": self.calibration_fraction,
            "health_bands": self.health_bands,
            "seed": self.seed,
        }

    # --- learning ----------------------------------------------------------------------------

    def fit(self, X: pl.DataFrame, y: Any, order: Any) -> DealWinModel:
        """Learn from feature rows `X`, labels `y` (1 = won) and `order` (deal close time).

        `X` holds the feature columns (`feature_spec.feature_names()` when a spec is given,
        else all columns); string columns are categorical. Raises InsufficientDataError when a
        slice is empty or the calibration slice lacks a class.
        """
        import lightgbm as lgb

        names = self.feature_spec.feature_names() if self.feature_spec else list(X.columns)
        labels = np.asarray(pl.Series(y).cast(pl.Float64).to_numpy(), dtype=np.float64)
        slices, (valid_from, calibration_from) = self._slices(pl.Series(order))
        self.feature_names_ = names
        self.categorical_features_ = [
            n for n in names if X.schema[n] in (pl.String, pl.Categorical)
        ]
        train_rows = X.filter(pl.Series(slices == 0))
        self.categories_ = {
            c: sorted(train_rows.get_column(c).drop_nulls().unique().cast(pl.String).to_list())
            for c in self.categorical_features_
        }
        matrix = self._matrix(X)
        self.slice_of_ = slices
        parts = [slices == i for i in range(3)]
        self._check_slices(labels, parts)
        categorical_idx = [names.index(c) for c in self.categorical_features_]
        train = lgb.Dataset(
            matrix[parts[0]],
            labels[parts[0]],
            feature_name=names,
            categorical_feature=categorical_idx,
            free_raw_data=True,
        )
        valid = train.create_valid(matrix[parts[1]], labels[parts[1]])
        booster = lgb.train(
            self.lgb_params(),
            train,
            num_boost_round=self.n_estimators,
            valid_sets=[valid],
            callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
        )
        best = int(booster.best_iteration or booster.current_iteration())
        self.best_iteration_ = best
        self.booster_ = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        raw_cal = np.asarray(
            self.booster_.predict(matrix[parts[2]], raw_score=True), dtype=np.float64
        )
        self.calibrator_ = fit_calibrator(self.calibration, raw_cal, labels[parts[2]])
        self.base_rate_ = float(labels[parts[0]].mean())
        self.slices_ = SliceSummary(
            train_rows=int(parts[0].sum()),
            valid_rows=int(parts[1].sum()),
            calibration_rows=int(parts[2].sum()),
            train_wins=int(labels[parts[0]].sum()),
            valid_wins=int(labels[parts[1]].sum()),
            calibration_wins=int(labels[parts[2]].sum()),
            valid_from=valid_from,
            calibration_from=calibration_from,
        )
        return self

    def _slices(self, order: pl.Series) -> tuple[np.ndarray, tuple[str, str]]:
        """0 = train, 1 = early stopping, 2 = calibration, by quantiles of `order`; and the
        order values after which the later slices start (as text)."""
        values = order.dt.epoch("us") if order.dtype.is_temporal() else order.cast(pl.Float64)
        cut_valid = values.quantile(1.0 - self.valid_fraction - self.calibration_fraction, "lower")
        cut_cal = values.quantile(1.0 - self.calibration_fraction, "lower")
        as_time = order.dtype.is_temporal()
        arr = values.to_numpy()
        slices = np.where(arr > cut_cal, 2, np.where(arr > cut_valid, 1, 0)).astype(np.int8)
        return slices, (_as_text(cut_valid, as_time), _as_text(cut_cal, as_time))

    @staticmethod
    def _check_slices(labels: np.ndarray, parts: list[np.ndarray]) -> None:
        for name, part in zip(("training", "early-stopping", "calibration"), parts, strict=True):
            wins = labels[part].sum()
            if part.sum() == 0 or wins == 0 or wins == part.sum():
                raise InsufficientDataError(
                    f"the {name} slice has {int(part.sum())} snapshots with {int(wins)} wins; "
                    "each slice needs both won and lost deals (more closed deals needed)"
                )

    # --- answering ---------------------------------------------------------------------------

    def _matrix(self, X: Any) -> np.ndarray:
        """Feature matrix (float32, columns in `feature_names_` order, categories as codes)."""
        frame = X if isinstance(X, pl.DataFrame) else pl.from_pandas(X)
        missing = [n for n in self.feature_names_ if n not in frame.columns]
        if missing:
            raise ValueError(f"missing feature columns: {missing[:5]}")
        exprs = []
        for name in self.feature_names_:
            if name in self.categories_:
                vocabulary = pl.Enum(self.categories_[name])
                exprs.append(
                    pl.col(name)
                    .cast(pl.String)
                    .cast(vocabulary, strict=False)
                    .to_physical()
                    .cast(pl.Float32)
                    .alias(name)
                )
            else:
                exprs.append(pl.col(name).cast(pl.Float32).fill_nan(None).alias(name))
        return frame.select(exprs).to_numpy().astype(np.float32, copy=False)

    def predict_raw(self, X: Any) -> np.ndarray:
        """The booster's raw score (log-odds, before calibration)."""
        return np.asarray(self.booster_.predict(self._matrix(X), raw_score=True), dtype=np.float64)

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated win probability for raw scores."""
        return apply_calibrator(self.calibration, self.calibrator_, raw)

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, 2) array: P(lost), P(won), calibrated."""
        p = self.calibrate(self.predict_raw(X))
        return np.column_stack([1.0 - p, p])

    def contributions(self, X: Any) -> np.ndarray:
        """Exact TreeSHAP (n, f + 1) in raw log-odds; last column = base value."""
        contrib = self.booster_.predict(self._matrix(X), pred_contrib=True)
        return np.asarray(contrib, dtype=np.float64)

    def predict_with_contributions(self, X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(calibrated probability, raw score, contributions) from one matrix build."""
        matrix = self._matrix(X)
        contrib = np.asarray(self.booster_.predict(matrix, pred_contrib=True), dtype=np.float64)
        raw = contrib.sum(axis=1)
        return self.calibrate(raw), raw, contrib

    def feature_importance(self) -> pl.DataFrame:
        """Gain and split importance per feature, largest gain first."""
        return pl.DataFrame(
            {
                "feature": self.feature_names_,
                "gain": self.booster_.feature_importance("gain").astype(np.float64),
                "splits": self.booster_.feature_importance("split").astype(np.int64),
            }
        ).sort("gain", "feature", descending=[True, False])


def _as_text(value: float | None, as_time: bool) -> str:
    if value is None:
        return "none"
    if as_time:
        from datetime import UTC, datetime, timedelta

        return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(value))).isoformat()
    return repr(float(value))


def fit_calibrator(method: Calibration, raw: np.ndarray, labels: np.ndarray) -> Any:
    """A calibrator mapping raw log-odds to probability (see `apply_calibrator`)."""
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=1e6).fit(raw.reshape(-1, 1), labels.astype(np.int64))
    from sklearn.isotonic import IsotonicRegression

    return IsotonicRegression(
        y_min=PROBABILITY_FLOOR, y_max=1.0 - PROBABILITY_FLOOR, out_of_bounds="clip"
    ).fit(raw, labels)


def apply_calibrator(method: Calibration, calibrator: Any, raw: np.ndarray) -> np.ndarray:
    """Probabilities from raw log-odds, kept inside [floor, 1 - floor]."""
    if method == "platt":
        p = calibrator.predict_proba(np.asarray(raw).reshape(-1, 1))[:, 1]
    else:
        p = calibrator.predict(np.asarray(raw))
    return np.clip(np.asarray(p, dtype=np.float64), PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)
