"""The scheduled salesml flows. Each body is a recipe of library calls and holds no logic.

Each flow resolves the settings and as_of (`pipelines.params`), runs the job with the Prefect
executor (every step a task; IO steps retried; `pipelines.tasks`), publishes a markdown summary
(`pipelines.run_summary`) and returns the summary as a dict.

| flow             | job                                   | schedule (prefect.yaml)          |
|------------------|---------------------------------------|----------------------------------|
| train-deal-win   | salesml.deals.deal_win_jobs.train              | nightly                          |
| score-deals      | salesml.deals.deal_win_jobs.score              | hourly                           |
| train-demand     | salesml.demand.demand_jobs.train             | nightly                          |
| forecast-demand  | salesml.demand.demand_jobs.forecast          | every bucket (4 h), local time   |
| backtest         | deals + demand backtest               | weekly                           |

Parameters: `config` (YAML path; None = defaults) and `as_of` (ISO; None = the run's scheduled
time, or for forecast-demand the latest bucket boundary at or before it).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from pipelines.params import load_settings, resolve_as_of, resolve_bucket_as_of
from pipelines.run_summary import publish, summarize
from pipelines.tasks import log_progress, prefect_executor
from salesml.job_lifecycle import use_executor


@flow(name="train-deal-win")
def train_deal_win(config: str | None = None, as_of: str | None = None) -> dict[str, Any]:
    """Nightly: train the deal-win model, gate @champion, write behavior_value."""
    from salesml.deals import deal_win_jobs

    settings = load_settings(config)
    when = resolve_as_of(as_of, settings)
    with use_executor(prefect_executor(settings)):
        outcome = deal_win_jobs.train(settings, when, progress=log_progress())
    summary = summarize("train_deal_win", outcome, settings)
    publish(summary)
    return summary


@flow(name="score-deals")
def score_deals(config: str | None = None, as_of: str | None = None) -> dict[str, Any]:
    """Hourly: score every open deal with @champion; deal_scores, factors, pipeline forecast,
    what changed since the previous run, rep / region views, next-best actions; then alerts.
    """
    from salesml.deals import deal_win_jobs

    settings = load_settings(config)
    when = resolve_as_of(as_of, settings)
    with use_executor(prefect_executor(settings)):
        outcome = deal_win_jobs.score(settings, when, progress=log_progress())
    summary = summarize("score_deals", outcome, settings)
    publish(summary)
    return summary


@flow(name="train-demand")
def train_demand(config: str | None = None, as_of: str | None = None) -> dict[str, Any]:
    """Nightly: train the demand model and gate @champion."""
    from salesml.demand import demand_jobs

    settings = load_settings(config)
    when = resolve_as_of(as_of, settings)
    with use_executor(prefect_executor(settings)):
        outcome = demand_jobs.train(settings, when, progress=log_progress())
    summary = summarize("train_demand", outcome, settings)
    publish(summary)
    return summary


@flow(name="forecast-demand")
def forecast_demand(
    config: str | None = None,
    as_of: str | None = None,
    scenario: str | None = None,
    weights: list[str] | None = None,
) -> dict[str, Any]:
    """Every bucket: forecast demand, drivers, SKU health, then the demand alerts (fans out on
    Dask if configured).
    With `scenario` and `weights` (SIGNAL[@REGION]=WEIGHT): a what-if beside the baseline.
    """
    from salesml.demand import adjust, demand_jobs

    settings = load_settings(config)
    when = resolve_bucket_as_of(as_of, settings)
    what_if = adjust.from_options(scenario, weights, settings.demand)
    with use_executor(prefect_executor(settings)):
        outcome = demand_jobs.forecast(settings, when, progress=log_progress(), scenario=what_if)
    summary = summarize("forecast_demand", outcome, settings)
    publish(summary)
    return summary


@flow(name="backtest")
def backtest(
    config: str | None = None, as_of: str | None = None, n_origins: int = 4
) -> dict[str, Any]:
    """Weekly: rolling-origin backtests of both models and of the in-period pipeline forecast
    against their baselines.
    """
    from salesml.deals import deal_win_jobs as deal_jobs
    from salesml.demand import demand_jobs

    settings = load_settings(config)
    when = resolve_as_of(as_of, settings)
    with use_executor(prefect_executor(settings)):
        deal_win = deal_jobs.backtest(settings, when, n_origins, progress=log_progress())
        demand = demand_jobs.backtest(settings, when, n_origins, progress=log_progress())
    summaries = {
        "deal_win": summarize("backtest_deal_win", deal_win, settings),
        "demand": summarize("backtest_demand", demand, settings),
    }
    for summary in summaries.values():
        publish(summary)
    return summaries
