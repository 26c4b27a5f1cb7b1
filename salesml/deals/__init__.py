"""Deal-win model: which open deals will close, why, and how healthy they are.

Modules, in the order a run uses them:
- `snapshots`: labelled (deal, time) states for training, open deals for scoring; censoring.
- `features`: point-in-time features (polars, vectorised) and the `FeatureSpec` that travels
  with the model.
- `model`: `DealWinModel` (LightGBM + out-of-sample calibration, sklearn-shaped).
- `training`: fit as of an instant, sufficiency gate, holdout for the champion gate.
- `scoring`: probabilities, SHAP drivers in words, health, pipeline forecast.
- `health`, `behavior`, `pipeline_forecast`, `baselines`, `evaluation` (backtest).
- `jobs`: `train`, `score`, `backtest` (warehouse + MLflow), called by the CLI and flows.

Contributions everywhere (deal_score_factors.contribution, top_factors, SHAP plots) are exact
TreeSHAP values in log-odds of the booster's raw score, before calibration; `behavior_value`
reports per-activity contributions in win probability (and log-odds).
"""
