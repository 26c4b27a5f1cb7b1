"""Small, fast model settings for small worlds (sufficiency minimums lowered to match).

One declaration shared by the tests that run whole jobs (flows, crash suite, demand tests)."""

from __future__ import annotations

from typing import Any

FAST_DEMAND: dict[str, Any] = {
    "model": {
        "n_estimators": 25,
        "num_leaves": 7,
        "min_data_in_leaf": 10,
        "learning_rate": 0.2,
        "max_train_rows": 20_000,
        "num_threads": 1,
    },
    "intervals": {"calibration_origins": 1},
}

FAST_MODELS: dict[str, Any] = {
    "deals": {
        "min_won": 30,
        "min_lost": 30,
        "forecast_simulations": 200,
        "holdout_days": 84,
        "model": {
            "num_threads": 1,
            "n_estimators": 60,
            "learning_rate": 0.15,
            "num_leaves": 7,
            "min_child_samples": 20,
            "early_stopping_rounds": 10,
        },
    },
    "demand": FAST_DEMAND,
}


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides`; a sub-section given as a dict is merged into the base's one.

    `merged({"model": {"seed": 1, "num_leaves": 7}}, {"model": {"seed": 2}})` keeps num_leaves.
    """
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out
