"""LightGBM native pred_contrib vs shap.TreeExplainer, and top_factors throughput.

Run: .venv/bin/python benchmarks/bench_shap.py [--rows 20000] [--features 40] [--trees 200]
Prints seconds per method and the largest difference between the two (they should agree).
For a LightGBM booster, shap 0.51's TreeExplainer (path-dependent) itself calls
`booster.predict(pred_contrib=True)`, so it can only add overhead (and a ~3 s shap import):
salesml.explain calls LightGBM directly.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--features", type=int, default=40)
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--leaves", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import lightgbm as lgb
    import shap

    from salesml import explain

    rng = np.random.default_rng(0)
    features = rng.normal(size=(args.rows, args.features))
    signal = features[:, :5] @ rng.normal(size=5) + rng.normal(size=args.rows)
    label = (signal > 0).astype(int)
    params = {
        "objective": "binary",
        "num_leaves": args.leaves,
        "verbose": -1,
        "num_threads": args.threads,
        "deterministic": True,
        "force_col_wise": True,
        "seed": 0,
    }
    booster = lgb.train(params, lgb.Dataset(features, label), num_boost_round=args.trees)
    print(
        f"data: {args.rows} rows x {args.features} features; "
        f"model: {args.trees} trees x {args.leaves} leaves; {args.threads} threads"
    )

    started = time.perf_counter()
    native = explain.shap_contributions(booster, features)
    native_s = time.perf_counter() - started
    print(f"lightgbm pred_contrib:        {native_s:7.2f} s")

    started = time.perf_counter()
    explainer = shap.TreeExplainer(booster)
    values = np.asarray(explainer.shap_values(features))
    treeshap_s = time.perf_counter() - started
    print(f"shap.TreeExplainer:           {treeshap_s:7.2f} s")
    print(f"max |difference|:             {np.max(np.abs(values - native[:, :-1])):.2e}")
    raw = booster.predict(features, raw_score=True)
    print(f"additivity error (native):    {explain.additivity_error(native, raw):.2e}")

    names = [f"feature_{i}" for i in range(args.features)]
    frame = pl.DataFrame(features, schema=names)
    started = time.perf_counter()
    factors = explain.top_factors(native, names, frame, k=5)
    print(
        f"top_factors k=5:              {time.perf_counter() - started:7.2f} s ({factors.height} rows)"
    )
    faster = "lightgbm pred_contrib" if native_s <= treeshap_s else "shap.TreeExplainer"
    print(f"faster: {faster} ({max(native_s, treeshap_s) / min(native_s, treeshap_s):.2f}x)")


if __name__ == "__main__":
    main()
