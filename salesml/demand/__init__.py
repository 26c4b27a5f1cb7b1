"""Demand forecasting: buckets, features, LightGBM model, baselines, evaluation and jobs."""
