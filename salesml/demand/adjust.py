"""Planner levers: signal weights as post-model adjustments, and what-if scenarios (pure).

A tree barely reacts to a rescaled input, so `demand.signal_weights` does not touch the model's
features (it is trained and fed the raw signals). It acts on the forecast instead:

- Rule. For signal `s` with weight `w` in region `r`, every open cell (a bucket where the
  customer is not closed) of a series in `r` where `s` is *active* -- its value, looked up
  exactly as the model's feature is (known signals at the bucket's start, observed ones as
  last seen by `as_of`), is present and not 0 -- gets its expected units multiplied by `w`.
  Several active weighted signals multiply. Weight 1 (or a signal not active in the cell)
  changes nothing; cells of other regions, closed cells and cells with no value keep their
  rows bit for bit.
- Regions. `{"promotion": {"north": 1.5}}` acts on series whose region is `north`; the region
  `*` (or `all`) is every region, and a named region beats it for its own series.
- Distribution. `expected` changes by exactly the product of the weights; `var` and P10/P90
  come from the same calibrated negative binomial at the new mean (`DemandModel.variance`,
  `DemandModel.predict_quantiles`), and P50 is the previous whole-unit median times the factor,
  rounded to whole units, so quantiles stay whole and ordered around the new mean.
- Log. Per (signal, configured region): the cells it touched and the expected units it added
  (negative: removed), each step counted on the mean it received (weights apply in config
  order), so the units of all steps add up to the total change.

Scenarios. `salesml forecast demand --scenario NAME --set promotion=1.5 --set price@north=0.9`
starts from the configured weights: `--set SIGNAL=W` replaces that signal's weights by
`{"*": W}`, `--set SIGNAL@REGION=W` then sets one region (applied in the order given).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from salesml.config import DemandSettings

if TYPE_CHECKING:
    from salesml.demand.features import History
    from salesml.demand.model import DemandModel

BASELINE = "baseline"
"""The `scenario` of the normal run's demand_forecast rows."""
WILDCARD_REGIONS = ("*", "all")
"""Region keys that mean every region."""
_SCENARIO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

Weights = Mapping[str, Mapping[str, float]]

LOG_SCHEMA = pl.Schema(
    {
        "signal": pl.String,
        "region": pl.String,
        "weight": pl.Float64,
        "cells": pl.Int64,
        "units_added": pl.Float64,
    }
)
"""What each (signal, configured region) weight did: cells touched, expected units added."""


class ScenarioError(ValueError):
    """A what-if option that cannot be used (one line naming the option)."""


@dataclass(frozen=True)
class Scenario:
    """A named what-if: the signal weights it forecasts with (the configured ones, overridden)."""

    name: str
    weights: dict[str, dict[str, float]]


@dataclass(frozen=True)
class Adjusted:
    """The adjusted forecast frame and the log of each (signal, region) weight's effect."""

    frame: pl.DataFrame
    log: pl.DataFrame  # LOG_SCHEMA


# --- scenarios ---------------------------------------------------------------------------------


def scenario(name: str, sets: Sequence[str], demand: DemandSettings) -> Scenario:
    """The scenario `name` with the configured weights overridden by `sets` (`SIGNAL[@REGION]=W`);
    a ScenarioError names the option that is wrong.
    """
    if name == BASELINE or not _SCENARIO_NAME.fullmatch(name):
        raise ScenarioError(
            f"--scenario {name!r}: use 1-64 letters, digits, '_', '.', '-' (not {BASELINE!r})"
        )
    if not sets:
        raise ScenarioError(f"--scenario {name!r} needs at least one --set SIGNAL[@REGION]=WEIGHT")
    known = list(dict.fromkeys([*demand.known_signals, *demand.observed_signals]))
    weights = {s: dict(r) for s, r in demand.signal_weights.items()}
    for text in sets:
        signal, region, weight = parse_set(text, known)
        if region is None:
            weights[signal] = {"*": weight}
        else:
            weights.setdefault(signal, {})[region] = weight
    return Scenario(name, weights)


def from_options(
    name: str | None, sets: Sequence[str] | None, demand: DemandSettings
) -> Scenario | None:
    """The what-if the command line or a flow asked for (`--scenario`, `--set`), or None for the
    baseline run (neither given).
    """
    if name is None:
        if sets:
            raise ScenarioError(
                "--set needs --scenario NAME (the baseline uses demand.signal_weights)"
            )
        return None
    return scenario(name, sets or [], demand)


def parse_set(text: str, known: Sequence[str]) -> tuple[str, str | None, float]:
    """`SIGNAL[@REGION]=WEIGHT` -> (signal, region or None, weight); the signal must be one of
    `known` (the configured known and observed signals), the weight a finite number >= 0.
    """
    target, sep, number = text.partition("=")
    signal, at, region = target.strip().partition("@")
    signal, region = signal.strip(), region.strip()
    if not sep or not signal or (at and not region):
        raise ScenarioError(f"--set {text!r}: expected SIGNAL[@REGION]=WEIGHT, e.g. promotion=1.5")
    if signal not in known:
        names = ", ".join(known) or "none configured"
        raise ScenarioError(f"--set {text!r}: unknown signal {signal!r} (known: {names})")
    try:
        weight = float(number)
    except ValueError:
        raise ScenarioError(f"--set {text!r}: weight {number.strip()!r} is not a number") from None
    if not math.isfinite(weight) or weight < 0:
        raise ScenarioError(f"--set {text!r}: weight must be a finite number >= 0")
    return signal, (region or None), weight


# --- signal values per cell ----------------------------------------------------------------------


def signal_column(signal: str, demand: DemandSettings) -> str:
    """The feature column holding `signal`'s value (`signal_<name>` known, `observed_<name>`)."""
    return f"signal_{signal}" if signal in demand.known_signals else f"observed_{signal}"


def signal_values(
    history: History,
    frame: pl.DataFrame,
    demand: DemandSettings,
    signals: pl.DataFrame | None,
    as_of: datetime,
    names: Sequence[str],
) -> pl.DataFrame:
    """Per forecast cell of `frame` (series_id, bucket): its series' region and the value of each
    signal in `names` (Float64, null when none applies), looked up point in time exactly as the
    model's features are (`features.make_features`: known signals at the bucket's start,
    observed ones as last seen at the origin and never after `as_of`). Same row order as `frame`.
    """
    from salesml.demand.features import make_features

    series = history.series.select("series_id", "region", "start_row", "first_bucket")
    cells = frame.select("series_id", "bucket", pl.col("horizon").alias("h")).join(
        series, on="series_id", how="left", maintain_order="left"
    )
    columns = [signal_column(n, demand) for n in names]
    if signals is None or signals.height == 0 or cells.height == 0:
        return cells.select(
            "series_id", "bucket", "region", *[pl.lit(None, pl.Float64).alias(c) for c in columns]
        )
    rows = cells.select(
        (pl.col("start_row") + pl.col("bucket") - pl.col("first_bucket")).alias("row"),
        pl.col("h").cast(pl.Int32),
    )
    found = make_features(history, rows, demand, signals, as_of, columns=columns)
    found = found.select("series_id", "bucket", *[pl.col(c).cast(pl.Float64) for c in columns])
    return cells.select("series_id", "bucket", "region").join(
        found, on=["series_id", "bucket"], how="left", maintain_order="left"
    )


# --- the adjustment ------------------------------------------------------------------------------


def cell_factors(
    cells: pl.DataFrame,
    mean: pl.Series,
    closed: pl.Series,
    weights: Weights,
    demand: DemandSettings,
) -> tuple[pl.Series, pl.DataFrame]:
    """Each cell's multiplier of expected units (1.0 where nothing applies) and the log
    (LOG_SCHEMA) of what each (signal, region) weight did, per the module's rule.

    `cells`: region and the signals' value columns (`signal_values`), one row per cell of
    `mean` / `closed`. A weighted signal without a value column touches no cell.
    """
    factor = np.ones(cells.height)
    current = mean.to_numpy().astype(np.float64, copy=True)
    is_open = ~closed.to_numpy().astype(bool)
    region = cells["region"].fill_null("")
    log: list[tuple[str, str, float, int, float]] = []
    for signal, by_region in weights.items():
        column = signal_column(signal, demand)
        if column not in cells.columns:
            values = np.zeros(cells.height)
        else:
            values = cells[column].fill_null(0.0).fill_nan(0.0).to_numpy()
        active = is_open & (values != 0.0)
        named = {r: w for r, w in by_region.items() if r not in WILDCARD_REGIONS}
        is_named = region.is_in(list(named)).to_numpy()
        for key, weight in by_region.items():
            applies = ~is_named if key in WILDCARD_REGIONS else (region == key).to_numpy()
            touched = active & applies & (weight != 1.0)
            added = float(np.sum(current[touched] * (weight - 1.0)))
            log.append((signal, key, float(weight), int(touched.sum()), added))
            current[touched] *= weight
            factor[touched] *= weight
    return pl.Series("factor", factor), pl.DataFrame(log, schema=LOG_SCHEMA, orient="row")


def apply(frame: pl.DataFrame, factor: pl.Series, model: DemandModel) -> pl.DataFrame:
    """`frame` (mean, var, p10, p50, p90 per cell) with each cell whose `factor` is not 1 moved
    to `factor` x its expected units (see the module's rule); every other row is unchanged.
    """
    touched = (factor != 1.0).to_numpy()
    if not touched.any():
        return frame
    scale = factor.to_numpy()[touched]
    mean = frame["mean"].to_numpy()[touched] * scale
    p10, p50, p90 = model.predict_quantiles(mean, frame["p50"].to_numpy()[touched] * scale)
    updates = {"mean": mean, "var": model.variance(mean), "p10": p10, "p50": p50, "p90": p90}
    index = pl.Series(np.flatnonzero(touched))
    out = frame
    for name, values in updates.items():
        if name in out.columns:
            column = out[name].cast(pl.Float64).scatter(index, values)
            out = out.with_columns(column.cast(frame.schema[name]).alias(name))
    return out


def adjust(
    frame: pl.DataFrame,
    cells: pl.DataFrame,
    weights: Weights,
    model: DemandModel,
    demand: DemandSettings,
) -> Adjusted:
    """Apply `weights` to the forecast `frame` (pipeline.Forecast.frame, one row per cell of
    `cells`, same order) by the module's rule, with the log of what each weight did.
    """
    factor, log = cell_factors(cells, frame["mean"], frame["closed"], weights, demand)
    return Adjusted(apply(frame, factor, model), log)


def combine_logs(logs: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Logs of partitions of one forecast as one (cells and units summed per signal, region)."""
    if not logs:
        return pl.DataFrame(schema=LOG_SCHEMA)
    return (
        pl.concat(logs)
        .group_by("signal", "region", maintain_order=True)
        .agg(pl.col("weight").first(), pl.col("cells").sum(), pl.col("units_added").sum())
        .select(list(LOG_SCHEMA))
    )


def describe_log(log: pl.DataFrame) -> list[str]:
    """One line per (signal, region) weight, for the run's notes."""
    return [
        f"signal weight {r['signal']}@{r['region']} x{r['weight']:g}: {r['cells']} cells, "
        f"{r['units_added']:+.1f} expected units"
        for r in log.iter_rows(named=True)
    ]
