"""Next-best actions (`deal_actions`) against the planted activity effects of the sample world.

Run (2 cores):  OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python benchmarks/bench_deal_actions.py
                [--deals N] [--days D] [--seeds S ...] [--before-days B]

Trains a DealWinModel at as_of = world end - B days as the train job does
(`training.fit_deal_win`, default settings), scores the deals open at as_of, computes the uplift
of every feasible (activity type, contact role) for every open deal (`actions.candidate_uplifts`)
and the recommended rows (`actions.deal_actions`), and prints:
- Spearman rank correlation between the mean uplift per (type, role) and the planted effect
  (PLANTED_ACTIVITY_EFFECTS; target >= 0.6), next to two trivial rankings known at as_of: the
  config's role weight of the pair's role, and the naive association (win rate of closed deals
  with the pair minus without);
- mean |uplift| of pairs planted as 0 next to the mean uplift of pairs planted > 0 (target: the
  first ~0), the same for `uplift_over_any_activity` (net of the placebo: one more activity of
  no particular type or role), the mean planted effect of the recommended actions vs of all
  feasible ones, and the share of recommended actions planted as useless (<= 0);
- the world's own causal uplift of the same (deal, action) rows (`true_uplift`: the truth's
  close time and log-odds at close with the action's planted effect added, decayed to the close),
  and the model's uplift over it: what a recommended "+6 pts" would really achieve;
- the information limit (`oracle_fit`): the 36 pair effects fitted by logistic regression on
  the deals closed by as_of, every other cause of the outcome known exactly (an offset from the
  truth) and each pair's decayed sum at the close known; its Spearman against the planted
  effects bounds what any estimator learning from this much history can reach; and the same
  pair coefficients from a logistic regression on the model's own training snapshots and
  features (`snapshot_oracle`): the pair-specific signal the snapshot labels carry;
- time and deals per second of the actions step.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression

from salesml.config import DealActionSettings, DealsSettings
from salesml.deals.actions import candidate_uplifts, deal_actions
from salesml.deals.features import build_features, pair_column
from salesml.deals.model import DealWinModel
from salesml.deals.snapshots import open_deals
from salesml.deals.training import fit_deal_win, training_snapshots, with_lost_after
from salesml.numeric import sigmoid
from salesml.sample import PLANTED_ACTIVITY_EFFECTS, WORLD_END, deals_world
from salesml.sample.deals import ACTION_EXPERIMENT, DEFAULT_MECHANISM, ActionMechanism
from salesml.timeutil import DATETIME


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks_a = pl.Series(a).rank("average").to_numpy()
    ranks_b = pl.Series(b).rank("average").to_numpy()
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def mean(values: pl.Series) -> float:
    """Mean of a float column (NaN when empty)."""
    out = values.cast(pl.Float64).mean()
    return float(out) if isinstance(out, float | int) else float("nan")


def planted_frame() -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"activity_type": t, "contact_role": r, "planted": v}
            for (t, r), v in PLANTED_ACTIVITY_EFFECTS.items()
        ]
    )


def naive_association(tables: dict[str, pl.DataFrame], as_of: datetime) -> pl.DataFrame:
    """Per pair: win rate of deals closed by as_of that had the pair minus those that did not."""
    at = pl.lit(as_of, DATETIME)
    closed = tables["deals"].filter(pl.col("closed_at") <= at).select("deal_id", "outcome")
    won = closed.select((pl.col("outcome") == "won").mean()).item()
    acts = tables["activities"].filter(
        (pl.col("occurred_at") <= at) & pl.col("contact_role").is_not_null()
    )
    having = (
        acts.join(closed, on="deal_id")
        .unique(["deal_id", "activity_type", "contact_role"])
        .group_by("activity_type", "contact_role")
        .agg((pl.col("outcome") == "won").sum().alias("w"), pl.len().alias("n"))
    )
    n_closed, n_won = closed.height, won * closed.height
    return having.select(
        "activity_type",
        "contact_role",
        (
            pl.col("w") / pl.col("n")
            - (n_won - pl.col("w")) / pl.max_horizontal(n_closed - pl.col("n"), 1)
        ).alias("naive"),
    )


def true_uplift(
    uplifts: pl.DataFrame,
    truth: pl.DataFrame,
    as_of: datetime,
    horizon_days: int,
    mechanism: ActionMechanism,
) -> pl.Series:
    """The world's causal uplift of each (deal, type, role) row of `uplifts`: the probability of
    "won within horizon_days of as_of" with one activity of the pair at as_of minus without.

    In the world an activity moves only the log-odds at the close, by its planted effect times
    2 ** (-(close - as_of) / half-life), and never the close time; a deal closing after as_of +
    horizon is not won within the horizon either way (0)."""
    half_life_days = mechanism.effect_half_life_hours / 24.0
    days = (pl.col("final_closed_at") - pl.lit(as_of, DATETIME)).dt.total_microseconds() / 864e8
    shift = pl.col("planted").fill_null(0.0) * (2.0 ** (-days / half_life_days))
    rows = uplifts.join(planted_frame(), on=["activity_type", "contact_role"], how="left").join(
        truth.select("deal_id", "final_closed_at", "true_log_odds"), on="deal_id", how="left"
    )
    lo = rows.get_column("true_log_odds").to_numpy()
    moved = rows.select(shift).to_series().to_numpy()
    inside = rows.select(days <= horizon_days).to_series().to_numpy()
    return pl.Series("true_uplift", inside * (sigmoid(lo + moved) - sigmoid(lo)))


def oracle_fit(
    tables: dict[str, pl.DataFrame],
    truth: pl.DataFrame,
    as_of: datetime,
    mechanism: ActionMechanism,
) -> dict[str, float]:
    """Spearman vs planted of the pair effects fitted on the deals closed by as_of by a logistic
    regression that knows every other cause exactly (offset = true log-odds minus the true
    behaviour score) and each pair's decayed sum at the close: the information limit of the
    outcomes themselves, whatever the features or model (median standard error in log-odds)."""
    at = pl.lit(as_of, DATETIME)
    closed = tables["deals"].filter(pl.col("closed_at") <= at).select("deal_id", "closed_at")
    age = (pl.col("closed_at") - pl.col("occurred_at")).dt.total_microseconds() / 36e8
    weights = (
        tables["activities"]
        .join(closed, on="deal_id")
        .group_by("deal_id", "activity_type", "contact_role")
        .agg((2.0 ** (-age / mechanism.effect_half_life_hours)).sum().alias("w"))
    )
    pairs = list(PLANTED_ACTIVITY_EFFECTS)
    columns = [
        weights.filter((pl.col("activity_type") == t) & (pl.col("contact_role") == r)).select(
            "deal_id", pl.col("w").alias(f"{t}|{r}")
        )
        for t, r in pairs
    ]
    frame = closed.join(truth, on="deal_id", how="left")
    for column in columns:
        frame = frame.join(column, on="deal_id", how="left")
    x = frame.select([f"{t}|{r}" for t, r in pairs]).fill_null(0.0).to_numpy()
    offset = (frame["true_log_odds"] - frame["true_behavior_score"]).to_numpy()
    y = (frame["final_outcome"] == "won").to_numpy().astype(np.float64)
    beta, hessian = np.zeros(len(pairs)), np.eye(len(pairs))
    for _ in range(30):  # Newton steps, a tiny ridge (0.01) for pairs that never occur
        p = sigmoid(offset + x @ beta)
        hessian = x.T @ (x * (p * (1.0 - p))[:, None]) + 0.01 * np.eye(len(pairs))
        beta += np.linalg.solve(hessian, x.T @ (y - p) - 0.01 * beta)
    planted = np.array([PLANTED_ACTIVITY_EFFECTS[p] for p in pairs])
    return {
        "spearman_oracle_vs_planted": round(spearman(beta, planted), 3),
        "oracle_median_se_log_odds": round(
            float(np.median(np.sqrt(np.diag(np.linalg.inv(hessian))))), 3
        ),
    }


def snapshot_oracle(
    tables: dict[str, pl.DataFrame], as_of: datetime, model: DealWinModel, settings: DealsSettings
) -> dict[str, float]:
    """Spearman vs planted of the decayed-pair coefficients of an L2 logistic regression on the
    model's own labelled training snapshots and features (every other feature a standardised
    control): how much pair-specific signal the snapshots' labels carry, whatever the learner."""
    assert model.feature_spec is not None
    tables = with_lost_after(tables, settings)
    labelled = training_snapshots(tables["deals"], as_of, settings)
    features = build_features(labelled.select("deal_id", "snapshot_at"), tables, model.feature_spec)
    pairs = [p for p in PLANTED_ACTIVITY_EFFECTS if pair_column(*p) in features.columns]
    names = [pair_column(*p) for p in pairs]
    controls = [
        c
        for c in features.columns
        if c not in names and c != "deal_id" and features.schema[c].is_numeric()
    ]
    x = features.select(pl.col([*names, *controls]).cast(pl.Float64).fill_null(0.0)).to_numpy()
    rest = x[:, len(names) :]
    x[:, len(names) :] = (rest - rest.mean(axis=0)) / (rest.std(axis=0) + 1e-9)
    fitted = LogisticRegression(C=0.1, max_iter=3000).fit(x, labelled["label"].to_numpy())
    planted = np.array([PLANTED_ACTIVITY_EFFECTS[p] for p in pairs])
    return {
        "spearman_snapshot_oracle_vs_planted": round(
            spearman(fitted.coef_[0][: len(names)], planted), 3
        ),
        "snapshot_oracle_snapshots": float(labelled.height),
    }


def fit_and_score(
    tables: dict[str, pl.DataFrame], as_of: datetime, settings: DealsSettings
) -> tuple[DealWinModel, pl.DataFrame, dict[str, float]]:
    """The model the train job would fit at as_of, the open deals' scores, fit figures."""
    started = time.perf_counter()
    trained = fit_deal_win(tables, as_of, settings)
    model = trained.model
    assert model.feature_spec is not None
    rows = open_deals(tables["deals"], as_of, settings.min_open_days).select(
        "deal_id", "snapshot_at"
    )
    features = build_features(rows, tables, model.feature_spec)
    scores = features.select("deal_id").with_columns(
        pl.Series("win_probability", model.predict_proba(features)[:, 1]),
        pl.lit("model").alias("score_basis"),
    )
    fitted = {"holdout_auc": round(trained.metrics["auc"], 4)}
    return model, scores, fitted | {"fit_seconds": round(time.perf_counter() - started, 1)}


def per_pair_table(
    uplifts: pl.DataFrame, tables: dict[str, pl.DataFrame], as_of: datetime, settings: DealsSettings
) -> pl.DataFrame:
    """Mean uplift per (type, role) next to the planted effect and the two trivial rankings."""
    return (
        uplifts.group_by("activity_type", "contact_role")
        .agg(
            pl.col("uplift").mean().alias("mean_uplift"),
            pl.col("uplift_over_any_activity").mean().alias("mean_over_any"),
            pl.col("true_uplift").mean().alias("mean_true_uplift"),
            pl.len().alias("deals"),
        )
        .join(planted_frame(), on=["activity_type", "contact_role"], how="inner")
        .join(naive_association(tables, as_of), on=["activity_type", "contact_role"], how="left")
        .with_columns(
            pl.col("contact_role")
            .replace_strict(
                settings.features.role_weights, default=settings.features.role_weights["other"]
            )
            .alias("role_weight")
        )
        .sort("mean_uplift", descending=True)
    )


def ranking_figures(
    per_pair: pl.DataFrame, uplifts: pl.DataFrame, actions: pl.DataFrame
) -> dict[str, float]:
    planted = per_pair["planted"].to_numpy()
    zero = per_pair.filter(pl.col("planted") == 0)
    effective = per_pair.filter(pl.col("planted") > 0)
    on = ["activity_type", "contact_role"]
    recommended = (
        actions.filter(pl.col("kind") == "action")
        .join(planted_frame(), on=on, how="left")
        .get_column("planted")
    )
    feasible = uplifts.join(planted_frame(), on=on, how="left").get_column("planted")
    return {
        "pairs": per_pair.height,
        "spearman_uplift_vs_planted": round(
            spearman(per_pair["mean_uplift"].to_numpy(), planted), 3
        ),
        "spearman_role_weight_vs_planted": round(
            spearman(per_pair["role_weight"].to_numpy(), planted), 3
        ),
        "spearman_naive_association_vs_planted": round(
            spearman(per_pair["naive"].fill_null(0).to_numpy(), planted), 3
        ),
        "mean_abs_uplift_planted_zero": round(mean(zero["mean_uplift"].abs()), 5),
        "mean_uplift_planted_positive": round(mean(effective["mean_uplift"]), 5),
        "pairs_planted_zero": zero.height,
        "mean_abs_over_any_planted_zero": round(mean(zero["mean_over_any"].abs()), 5),
        "mean_over_any_planted_positive": round(mean(effective["mean_over_any"]), 5),
        "mean_true_uplift_planted_positive": round(mean(effective["mean_true_uplift"]), 5),
        "model_uplift_over_true_planted_positive": round(
            mean(effective["mean_uplift"]) / mean(effective["mean_true_uplift"]), 1
        ),
        "model_over_any_over_true_planted_positive": round(
            mean(effective["mean_over_any"]) / mean(effective["mean_true_uplift"]), 1
        ),
        "share_of_recommended_planted_zero_or_less": round(mean(recommended <= 0), 4),
        "mean_planted_of_recommended": round(mean(recommended), 4),
        "mean_planted_of_feasible": round(mean(feasible), 4),
        "actions_rows": int((actions["kind"] == "action").sum()),
        "warning_rows": int((actions["kind"] == "warning").sum()),
    }


def run(
    n_deals: int,
    days: int,
    seed: int,
    before_days: int,
    mechanism: ActionMechanism,
    snapshot_every_days: int = 7,
) -> dict[str, Any]:
    """Every figure of one world: fit, uplifts of all candidates, recommended rows, timing."""
    tables, truth = deals_world(n_deals=n_deals, days=days, seed=seed, mechanism=mechanism)
    as_of = WORLD_END - timedelta(days=before_days)
    settings = DealsSettings(
        min_won=100,
        min_lost=100,
        model={"num_threads": 2},
        snapshot_every_days=snapshot_every_days,
    )
    model, scores, fitted = fit_and_score(tables, as_of, settings)
    action_settings = DealActionSettings()
    started = time.perf_counter()
    uplifts = candidate_uplifts(model, tables, scores, as_of, action_settings)
    uplift_seconds = time.perf_counter() - started
    started = time.perf_counter()
    actions = deal_actions(model, tables, scores, as_of, action_settings)
    action_seconds = time.perf_counter() - started
    uplifts = uplifts.with_columns(
        true_uplift(uplifts, truth, as_of, settings.label_horizon_days, mechanism)
    )
    per_pair = per_pair_table(uplifts, tables, as_of, settings)
    recommended = actions.filter(pl.col("kind") == "action")
    recommended = recommended.with_columns(
        true_uplift(recommended, truth, as_of, settings.label_horizon_days, mechanism)
    )
    with pl.Config(tbl_rows=40):
        print(per_pair)
    return {
        "world": {"deals": n_deals, "days": days, "seed": seed, "mechanism": str(mechanism)},
        "as_of": as_of.isoformat(),
        "open_deals": scores.height,
        "open_deals_closing_within_3_days": round(
            truth.join(scores.select("deal_id"), on="deal_id")
            .select((pl.col("final_closed_at") <= as_of + timedelta(days=3)).mean())
            .item(),
            3,
        ),
        **fitted,
        **ranking_figures(per_pair, uplifts, actions),
        **oracle_fit(tables, truth, as_of, mechanism),
        **snapshot_oracle(tables, as_of, model, settings),
        "recommended_mean_uplift": round(mean(recommended["uplift"]), 5),
        "recommended_mean_over_any": round(mean(recommended["uplift_over_any_activity"]), 5),
        "recommended_mean_true_uplift": round(mean(recommended["true_uplift"]), 5),
        "uplift_seconds": round(uplift_seconds, 2),
        "deal_actions_seconds": round(action_seconds, 2),
        "deals_per_second": round(scores.height / action_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deals", type=int, default=5000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--before-days", type=int, default=0)
    parser.add_argument(
        "--world",
        choices=["default", "experiment"],
        default="default",
        help="default: effects at the close only (72 h), mix follows interest; experiment: "
        "ACTION_EXPERIMENT (lasting effects, randomised activity mix)",
    )
    parser.add_argument(
        "--snapshot-every-days",
        type=int,
        default=7,
        help="cadence of the training snapshots (deals.snapshot_every_days; default 7)",
    )
    args = parser.parse_args()
    mechanism = ACTION_EXPERIMENT if args.world == "experiment" else DEFAULT_MECHANISM
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    runs = [
        run(args.deals, args.days, seed, args.before_days, mechanism, args.snapshot_every_days)
        for seed in args.seeds
    ]
    for figures in runs:
        print(json.dumps(figures, indent=2))
    keys = [k for k in runs[0] if k.startswith(("spearman", "mean_", "share_", "model_", "rec"))]
    print("summary over seeds", args.seeds)
    for key in keys:
        print(f"  {key}: {' / '.join(str(r[key]) for r in runs)}")


if __name__ == "__main__":
    main()
