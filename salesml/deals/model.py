"""`DealWinModel`: LightGBM win classifier + out-of-sample calibration, sklearn-shaped.

Fit takes the labelled snapshots and a `holdout` mask (the latest snapshots with full follow-up,
chosen by the caller by snapshot time, see `training.honest_split`). The booster learns from the
other rows only. The holdout decides the number of trees (early stopping) and fits the
calibrator (isotonic or Platt) on the booster's raw score; the deployed model uses all of it.

So that the metrics reported for the holdout are out of sample for early stopping and
calibration too, the holdout is cross-fitted by deal (two folds by a hash of the deal id): each
fold picks its own number of trees on its own rows and fits its own calibrator, and predicts the
other fold (`oof_raw_`, `oof_probability_`, in holdout row order). All snapshots of a deal fall
in one fold, so no deal's label is seen by both what predicts it and its evaluation.

Contributions (`contributions`) are exact TreeSHAP values in the booster's raw log-odds space,
before calibration: each row's contributions plus the base value equal `predict_raw`. The
calibrated probability is a monotone function of that raw score.

Categorical features are strings in the input; their vocabularies are learned in `fit` (from
the training rows only) and applied as integer codes (unknown or null -> missing), because
LightGBM must never see polars strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel
from sklearn.base import BaseEstimator

from salesml.deals.features import FeatureSpec
from salesml.estimator import params_from_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    import lightgbm as lgb
    import pandas as pd

Calibration = Literal["isotonic", "platt"]
PROBABILITY_FLOOR = 1e-4
"""Calibrated probabilities are kept in [floor, 1 - floor] so a log loss is never infinite."""


class InsufficientDataError(ValueError):
    """Too few won or lost examples (or slices too thin) to train a model worth trusting."""


@dataclass(frozen=True)
class SliceSummary:
    """How many rows / events the booster's training part and the holdout got."""

    train_rows: int
    holdout_rows: int
    train_wins: int
    holdout_wins: int


class DealWinModel(BaseEstimator):  # type: ignore[misc]
    """Calibrated probability of the event it was trained on: won within
    `label_horizon_days` of the score time (stored as given; it travels with the model).

    A scikit-learn estimator: every hyper-parameter is an `__init__` argument stored as given
    (so `get_params`, `set_params` and `sklearn.base.clone` work); the defaults equal
    `DealsSettings`' (a test checks) and `from_settings` reads them by name. Learned in `fit`
    only; learned state ends in `_`: `booster_`, `calibrator_`, `feature_names_`,
    `categorical_features_`, `categories_`, `best_iteration_`, `base_rate_` (event rate of the
    holdout), `slices_`, `oof_raw_`, `oof_probability_`. Policy is not model: the health bands
    that rate its probabilities come from the settings at scoring time (`scoring`).
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
        label_horizon_days: int | None = None,
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
        self.label_horizon_days = label_horizon_days
        self.seed = seed
        self.num_threads = num_threads

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle, also models pickled by older releases: their `health_bands` are dropped
        (policy, not model: scoring applies the bands of the current settings).
        """
        super().__setstate__({k: v for k, v in state.items() if k != "health_bands"})

    @classmethod
    def from_settings(cls, deals: BaseModel, **given: Any) -> DealWinModel:
        """An unfitted model configured from the `deals` settings; `given`: what is data, not
        settings (`feature_spec`, learned at as_of), or overrides.
        """
        return cls(**params_from_settings(cls, deals, **given))

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

    def tracking_params(self) -> dict[str, Any]:
        """Hyper-parameters logged with a run: `get_params()` without the feature spec (logged
        by its parts) and the thread count (no effect on the model).
        """
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
            "label_horizon_days": self.label_horizon_days,
            "seed": self.seed,
        }

    # --- learning ----------------------------------------------------------------------------

    def fit(
        self,
        X: pl.DataFrame,
        y: pl.Series | np.ndarray,
        holdout: pl.Series | np.ndarray,
        groups: pl.Series | np.ndarray,
    ) -> DealWinModel:
        """Learn from feature rows `X`, labels `y` (1 = the event happened), the `holdout` mask
        (True = early stopping and calibration, never boosted on) and `groups` (deal ids: the
        holdout's cross-fitting folds).

        `X` holds the feature columns (`feature_spec.feature_names()` when a spec is given,
        else all columns); string columns are categorical. Raises InsufficientDataError when a
        part or a holdout fold is empty or lacks a class.
        """
        import lightgbm as lgb

        names = self.feature_spec.feature_names() if self.feature_spec else list(X.columns)
        labels = np.asarray(pl.Series(y).cast(pl.Float64).to_numpy(), dtype=np.float64)
        in_holdout = np.asarray(pl.Series(holdout).cast(pl.Boolean).to_numpy(), dtype=bool)
        fold_b = deal_folds(groups, self.seed)
        folds = [in_holdout & ~fold_b, in_holdout & fold_b]
        self.feature_names_ = names
        self.categorical_features_ = [
            n for n in names if X.schema[n] in (pl.String, pl.Categorical)
        ]
        train_rows = X.filter(pl.Series(~in_holdout))
        self.categories_ = {
            c: sorted(train_rows.get_column(c).drop_nulls().unique().cast(pl.String).to_list())
            for c in self.categorical_features_
        }
        matrix = self.feature_matrix(X)
        self.slice_of_ = in_holdout.astype(np.int8)
        self._check_slices(labels, [~in_holdout, *folds])
        booster, curves = self._boost(matrix, labels, [in_holdout, *folds])
        best = _best_round(curves["holdout"])
        self.best_iteration_ = best
        self._cross_fit(booster, matrix, labels, folds, curves, in_holdout)
        self.booster_ = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        raw_holdout = self.predict_raw_matrix(matrix[in_holdout])
        self.calibrator_ = fit_calibrator(self.calibration, raw_holdout, labels[in_holdout])
        self.base_rate_ = float(labels[in_holdout].mean())
        self.slices_ = SliceSummary(
            train_rows=int((~in_holdout).sum()),
            holdout_rows=int(in_holdout.sum()),
            train_wins=int(labels[~in_holdout].sum()),
            holdout_wins=int(labels[in_holdout].sum()),
        )
        return self

    def _boost(
        self, matrix: np.ndarray, labels: np.ndarray, valid: list[np.ndarray]
    ) -> tuple[lgb.Booster, dict[str, dict[str, list[float]]]]:
        """(booster, log-loss curves) trained on the rows outside the holdout (`valid[0]`),
        recording the curves of the holdout and its two folds; stops when the holdout's stalls
        for `early_stopping_rounds`.
        """
        import lightgbm as lgb

        train = lgb.Dataset(
            matrix[~valid[0]],
            labels[~valid[0]],
            feature_name=self.feature_names_,
            categorical_feature=[self.feature_names_.index(c) for c in self.categorical_features_],
            free_raw_data=True,
        )
        curves: dict[str, dict[str, list[float]]] = {}
        booster = lgb.train(
            self.lgb_params() | {"metric": "binary_logloss"},
            train,
            num_boost_round=self.n_estimators,
            valid_sets=[train.create_valid(matrix[v], labels[v]) for v in valid],
            valid_names=["holdout", "fold_a", "fold_b"],
            callbacks=[
                lgb.record_evaluation(curves),
                _stop_when_stale("holdout", self.early_stopping_rounds),
            ],
        )
        return booster, curves

    def _cross_fit(
        self,
        booster: lgb.Booster,
        matrix: np.ndarray,
        labels: np.ndarray,
        folds: list[np.ndarray],
        curves: dict[str, dict[str, list[float]]],
        in_holdout: np.ndarray,
    ) -> None:
        """Out-of-fold raw score and probability of every holdout row: trees and calibrator
        chosen on one fold, applied to the other.
        """
        n = int(in_holdout.sum())
        position = np.cumsum(in_holdout) - 1  # row -> index among holdout rows
        self.oof_raw_ = np.zeros(n)
        self.oof_probability_ = np.zeros(n)
        for own, other, name in ((folds[0], folds[1], "fold_a"), (folds[1], folds[0], "fold_b")):
            rounds = _best_round(curves[name])
            raw_own = np.asarray(
                booster.predict(matrix[own], raw_score=True, num_iteration=rounds), np.float64
            )
            raw_other = np.asarray(
                booster.predict(matrix[other], raw_score=True, num_iteration=rounds), np.float64
            )
            calibrator = fit_calibrator(self.calibration, raw_own, labels[own])
            self.oof_raw_[position[other]] = raw_other
            self.oof_probability_[position[other]] = apply_calibrator(
                self.calibration, calibrator, raw_other
            )

    @staticmethod
    def _check_slices(labels: np.ndarray, parts: list[np.ndarray]) -> None:
        names = ("training", "holdout fold A", "holdout fold B")
        for name, part in zip(names, parts, strict=True):
            wins = labels[part].sum()
            if part.sum() == 0 or wins == 0 or wins == part.sum():
                raise InsufficientDataError(
                    f"the {name} part has {int(part.sum())} snapshots with {int(wins)} events; "
                    "each part needs snapshots with and without the event (more history needed, "
                    "or a shorter deals.label_horizon_days / longer deals.holdout_days)"
                )

    # --- answering ---------------------------------------------------------------------------

    def feature_matrix(self, X: pl.DataFrame | pd.DataFrame) -> np.ndarray:
        """Feature matrix LightGBM sees (float32, columns in `feature_names_` order, categories
        as codes from the training vocabulary; unknown or null -> NaN), e.g. for SHAP plots.
        """
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

    def predict_raw(self, X: pl.DataFrame | pd.DataFrame) -> np.ndarray:
        """The booster's raw score (log-odds, before calibration)."""
        return self.predict_raw_matrix(self.feature_matrix(X))

    def predict_raw_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """`predict_raw` of an already-built feature matrix."""
        return np.asarray(self.booster_.predict(matrix, raw_score=True), dtype=np.float64)

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated win probability for raw scores."""
        return apply_calibrator(self.calibration, self.calibrator_, raw)

    def predict_proba(self, X: pl.DataFrame | pd.DataFrame) -> np.ndarray:
        """(n, 2) array: P(lost), P(won), calibrated."""
        p = self.calibrate(self.predict_raw(X))
        return np.column_stack([1.0 - p, p])

    def contributions(self, X: pl.DataFrame | pd.DataFrame) -> np.ndarray:
        """Exact TreeSHAP (n, f + 1) in raw log-odds; last column = base value."""
        contrib = self.booster_.predict(self.feature_matrix(X), pred_contrib=True)
        return np.asarray(contrib, dtype=np.float64)

    def predict_with_contributions(
        self, X: pl.DataFrame | pd.DataFrame
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(calibrated probability, raw score, contributions) from one matrix build."""
        matrix = self.feature_matrix(X)
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


def deal_folds(groups: pl.Series | np.ndarray, seed: int) -> np.ndarray:
    """Cross-fitting fold of each row (True = fold B) from a hash of its deal id."""
    hashed = pl.Series(groups).cast(pl.String).hash(seed=seed) % 2 == 1
    return np.asarray(hashed.to_numpy(), dtype=bool)


def _best_round(curve: dict[str, list[float]]) -> int:
    """1-based boosting round with the lowest log loss on a validation curve."""
    return int(np.argmin(curve["binary_logloss"])) + 1


def _stop_when_stale(dataset: str, rounds: int) -> Callable[[lgb.callback.CallbackEnv], None]:
    """Early stopping on one named validation set only (LightGBM's own callback stops when
    any set stalls, and the cross-fitting folds must not decide for the holdout).
    """
    import lightgbm as lgb

    best_score = [np.inf]
    best_iteration = [0]

    def callback(env: lgb.callback.CallbackEnv) -> None:
        assert env.evaluation_result_list is not None  # lgb.train always passes the list
        for result in env.evaluation_result_list:  # (set name, metric, score, higher better)
            name, score = result[0], result[2]
            if name != dataset:
                continue
            if score < best_score[0]:
                best_score[0], best_iteration[0] = score, int(env.iteration)
            elif env.iteration - best_iteration[0] >= rounds:
                raise lgb.callback.EarlyStopException(best_iteration[0], [])

    callback.order = 30  # type: ignore[attr-defined]
    return callback


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
    """Probabilities from raw log-odds, kept inside [floor, 1 - floor] (none for none)."""
    if np.asarray(raw).size == 0:
        return np.zeros(0, dtype=np.float64)
    if method == "platt":
        p = calibrator.predict_proba(np.asarray(raw).reshape(-1, 1))[:, 1]
    else:
        p = calibrator.predict(np.asarray(raw))
    return np.clip(np.asarray(p, dtype=np.float64), PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)
