"""Deal-win on a real CRM export (Maven, no activity log): validate, backtest, train + score.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_deal_win_maven.py [--out DIR]

Everything goes through the product's public API with the config `benchmarks/maven_crm.py`
writes (its `column_map` renames the export's columns): `salesml.validate_job.validate_inputs` (job
deal-win), `salesml.deals.deal_win_jobs.backtest` (rolling origins, next to the base rate and the
logistic baseline), then at each of three as_of dates `salesml.deals.deal_win_jobs.train` and
`salesml.deals.deal_win_jobs.score`, whose written `deal_scores` are compared with what then happened.

What a probability is about: "won within `deals.label_horizon_days` (H) of as_of". The realised
label of a deal open at as_of is 1 when it was won by as_of + H, else 0 (lost, or still open, or
won later); every as_of here has as_of + H inside the data, so every label is known.

Base rate (the strongest trivial baseline, known at as_of): at weekly snapshots t over the
`BASE_WINDOW_DAYS` before as_of - H, the share of deals open at t that were won by t + H. Only
outcomes known at as_of enter it. The hindsight constant (the realised rate itself) is printed
too: no forecaster can know it, it is the floor of any constant.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
import maven_crm

from salesml.config import Settings, load
from salesml.inputs import load_tables
from salesml.timeutil import DATETIME

END = datetime(2017, 12, 31, tzinfo=UTC)
AS_OFS = ("2017-06-01", "2017-07-15", "2017-09-01", "2017-10-01")
BASE_WINDOW_DAYS = 90
SNAPSHOT_DAYS = 7


@dataclass
class Realised:
    """Written probabilities of one as_of against what happened."""

    as_of: datetime
    n: int
    won: float
    mean_p: float
    brier: float
    base_rate: float
    brier_base: float
    brier_hindsight: float
    auc: float | None
    bases: str


def horizon_days(settings: Settings) -> int:
    return int(getattr(settings.deals, "label_horizon_days", 90))


def base_rate_known_at(deals: pl.DataFrame, as_of: datetime, horizon: int) -> float:
    """Share of deals open at weekly snapshots in the window before as_of - H won within H."""
    end = as_of - timedelta(days=horizon)
    rates = []
    t = end
    while t > end - timedelta(days=BASE_WINDOW_DAYS):
        moment = pl.lit(t, DATETIME)
        open_at_t = deals.filter(
            (pl.col("created_at") <= moment)
            & (pl.col("closed_at").is_null() | (pl.col("closed_at") > moment))
        )
        label = (pl.col("outcome") == "won") & (
            pl.col("closed_at") <= moment + pl.duration(days=horizon)
        )
        rates.extend(open_at_t.select(label.fill_null(False)).to_series().to_list())
        t -= timedelta(days=SNAPSHOT_DAYS)
    return float(np.mean(rates)) if rates else math.nan


def realised(
    settings: Settings, truth: pl.DataFrame, known: pl.DataFrame, as_of: datetime
) -> Realised:
    """The deal_scores written for `as_of` against outcomes by as_of + H (truth: all data)."""
    from salesml import metrics
    from salesml.warehouse import Warehouse

    horizon = horizon_days(settings)
    if as_of + timedelta(days=horizon) > END:
        print(
            f"warning: as_of {as_of:%Y-%m-%d} + {horizon} days is past the data's end: "
            "some labels are not known yet"
        )
    scores = Warehouse.from_settings(settings).read("deal_scores", as_of=as_of)
    scores = scores.filter(pl.col("win_probability").is_not_null())
    limit = pl.lit(as_of + timedelta(days=horizon), DATETIME)
    label = ((pl.col("outcome") == "won") & (pl.col("closed_at") <= limit)).fill_null(False)
    joined = scores.join(truth.select("deal_id", label.alias("won")), on="deal_id", how="inner")
    y = joined["won"].cast(pl.Float64).to_numpy()
    p = joined["win_probability"].to_numpy()
    rate = base_rate_known_at(known, as_of, horizon)
    auc = metrics.auc(y, p) if 0 < y.sum() < len(y) and np.ptp(p) > 0 else None
    bases = (
        ", ".join(
            f"{k} {v}"
            for k, v in joined.group_by("score_basis").len().sort("score_basis").iter_rows()
        )
        if "score_basis" in joined.columns
        else "-"
    )
    return Realised(
        as_of=as_of,
        n=len(y),
        won=float(y.mean()),
        mean_p=float(p.mean()),
        brier=float(np.mean((p - y) ** 2)),
        base_rate=rate,
        brier_base=float(np.mean((rate - y) ** 2)),
        brier_hindsight=float(np.mean((y.mean() - y) ** 2)),
        auc=auc,
        bases=bases,
    )


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _print_table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _gate(report: Any) -> str:
    metrics = getattr(report, "metrics", {}) or {}
    parts = [f"{'promoted' if report.promoted else 'refused'}"]
    for key in ("brier_skill", "brier_skill_low", "brier_skill_high", "auc", "brier"):
        if key in metrics:
            parts.append(f"{key} {metrics[key]:.4f}")
    return "; ".join(parts)


def print_backtest(backtest: dict[str, Any]) -> None:
    rows = []
    for row in backtest["per_origin"]:
        model, base = row.get("model_brier"), row.get("base_rate_brier")
        gap = model - base if model is not None and base is not None else None
        rows.append(
            [
                str(row.get("origin"))[:10],
                row.get("n_rows"),
                row.get("base_rate"),
                row.get("model_auc"),
                row.get("logistic_auc"),
                model,
                row.get("logistic_brier"),
                base,
                gap,
                row.get("model_ece"),
            ]
        )
    _print_table(
        [
            "origin",
            "rows",
            "won",
            "AUC",
            "logit AUC",
            "Brier",
            "logit Brier",
            "base Brier",
            "Brier-base",
            "ECE",
        ],
        rows,
    )
    print(f"verdicts: {backtest.get('verdicts')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temp one)")
    parser.add_argument("--origins", type=int, default=4, help="backtest origins")
    parser.add_argument("--as-of", nargs="+", default=list(AS_OFS), help="train + score dates")
    parser.add_argument(
        "--horizon",
        type=int,
        default=None,
        help="deals.label_horizon_days (default: the product's)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    out = args.out or Path(tempfile.mkdtemp(prefix="salesml-maven-"))
    extra = {"label_horizon_days": args.horizon} if args.horizon else {}
    config, counts = maven_crm.write(out, deal_settings=extra)
    print(f"mapped Maven into {out}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    settings = load(config)

    from salesml.deals import deal_win_jobs
    from salesml.validate_job import validate_inputs

    summary = validate_inputs(settings, END, job="deal-win")
    print(
        f"validate deal-win: rows {summary['rows']}, quarantined {summary['quarantined_rows']}, "
        f"absent: {summary.get('absent', '-')}"
    )

    t0 = time.perf_counter()
    try:
        backtest = deal_win_jobs.backtest(settings, END, n_origins=args.origins)
    except Exception as exc:  # the product's one-line refusal is a result: print it, go on
        print(f"\nbacktest deal-win refused: {str(exc).splitlines()[0]}")
    else:
        print(
            f"\nbacktest deal-win, as_of {END:%Y-%m-%d}, {args.origins} origins "
            f"({time.perf_counter() - t0:.1f} s)"
        )
        print_backtest(backtest)

    truth, _ = load_tables(settings, None, ["deals"])
    results = []
    refused: list[str] = []
    for text in args.as_of:
        as_of = datetime.fromisoformat(text).replace(tzinfo=UTC)
        t0 = time.perf_counter()
        try:
            trained = deal_win_jobs.train(settings, as_of)
            gate = _gate(trained)
        except Exception as exc:  # a refusal is a result too: scoring falls back to the base rate
            gate = f"train refused: {str(exc).splitlines()[0]}"
        try:
            scored = deal_win_jobs.score(settings, as_of)
        except Exception as exc:
            print(f"\nas_of {text}: {gate}; score refused: {str(exc).splitlines()[0]}")
            refused.append(text)
            continue
        known, _ = load_tables(settings, as_of, ["deals"])
        result = realised(settings, truth["deals"], known["deals"], as_of)
        results.append((result, gate, getattr(scored, "model_version", None)))
        print(f"\nas_of {text}: {gate} ({time.perf_counter() - t0:.1f} s)")

    horizon = horizon_days(settings)
    print(f"\ntrain + score, then what happened (event: won within {horizon} days of as_of)")
    _print_table(
        [
            "as_of",
            "open",
            "won",
            "mean p",
            "Brier",
            "base rate",
            "base Brier",
            "Brier-base",
            "hindsight",
            "AUC",
            "version",
            "score basis",
        ],
        [
            [
                f"{r.as_of:%Y-%m-%d}",
                r.n,
                r.won,
                r.mean_p,
                r.brier,
                r.base_rate,
                r.brier_base,
                r.brier - r.brier_base,
                r.brier_hindsight,
                r.auc,
                version or "-",
                r.bases,
            ]
            for r, _, version in results
        ],
    )
    if refused:
        print(f"no scores written at: {', '.join(refused)} (see above)")
    ok = bool(results) and all(r.brier <= r.brier_base + 0.005 for r, _, _ in results)
    print(f"\nwritten Brier <= base-rate Brier + 0.005 at every as_of: {ok}")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
