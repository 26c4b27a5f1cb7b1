"""Files logged with a trained deal-win model: importance, SHAP summary, calibration, spec.

Writes into a folder the caller owns (a temporary directory in `jobs.train`); plots use the
matplotlib Agg backend, so no display is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from salesml import metrics
from salesml.deals.model import DealWinModel

SHAP_SAMPLE_ROWS = 2000


def write_artifacts(
    folder: Path,
    model: DealWinModel,
    features: pl.DataFrame,
    holdout: pl.DataFrame,
    behavior: pl.DataFrame,
    seed: int = 42,
    health_bands: dict[str, float] | None = None,
) -> dict[str, Path]:
    """Write every artifact file; returns {artifact name: path}. `health_bands`: the settings'
    bands the run was configured with (policy, not part of the model).
    """
    import matplotlib

    matplotlib.use("Agg")
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "feature_importance.csv": folder / "feature_importance.csv",
        "feature_importance.png": folder / "feature_importance.png",
        "shap_summary.png": folder / "shap_summary.png",
        "calibration.png": folder / "calibration.png",
        "feature_spec.json": folder / "feature_spec.json",
        "health_bands.json": folder / "health_bands.json",
        "behavior_value.csv": folder / "behavior_value.csv",
    }
    importance = model.feature_importance()
    importance.write_csv(paths["feature_importance.csv"])
    _importance_plot(importance, paths["feature_importance.png"])
    sample = features.sample(min(SHAP_SAMPLE_ROWS, features.height), seed=seed, shuffle=False)
    _shap_plot(model, sample, paths["shap_summary.png"])
    _calibration_plot(
        holdout.get_column("label").to_numpy(),
        holdout.get_column("win_probability").to_numpy(),
        paths["calibration.png"],
    )
    spec = model.feature_spec.to_dict() if model.feature_spec else {}
    paths["feature_spec.json"].write_text(json.dumps(spec, indent=2, sort_keys=True))
    paths["health_bands.json"].write_text(json.dumps(health_bands or {}, indent=2))
    behavior.write_csv(paths["behavior_value.csv"])
    return paths


def _importance_plot(importance: pl.DataFrame, path: Path, top: int = 25) -> None:
    import matplotlib.pyplot as plt

    head = importance.head(top).reverse()
    fig, ax = plt.subplots(figsize=(8, 0.3 * head.height + 1.5))
    ax.barh(head.get_column("feature").to_list(), head.get_column("gain").to_numpy())
    ax.set_xlabel("total gain")
    ax.set_title("deal-win feature importance")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _shap_plot(model: DealWinModel, sample: pl.DataFrame, path: Path) -> None:
    """Beeswarm of SHAP values (log-odds) for a sample of training snapshots."""
    import matplotlib.pyplot as plt
    import shap

    contrib = model.contributions(sample)
    matrix = model.feature_matrix(sample)
    shap.summary_plot(
        contrib[:, :-1],
        matrix,
        feature_names=model.feature_names_,
        max_display=20,
        show=False,
    )
    fig = plt.gcf()
    fig.suptitle("SHAP values (log-odds of the raw score)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _calibration_plot(y: np.ndarray, p: np.ndarray, path: Path, bins: int = 10) -> None:
    """Reliability diagram on the holdout: mean probability vs observed win rate per bin."""
    import matplotlib.pyplot as plt

    table = metrics.calibration_bins(y, p, bins)
    mean_p, rate = table.mean_probability, table.observed_rate
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    ax.plot(mean_p, rate, marker="o", label="model (holdout)")
    ax.set_xlabel("predicted win probability")
    ax.set_ylabel("observed win rate")
    ax.set_title("calibration on the holdout (latest-closing deals)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
