"""Helpers shared by the synthetic worlds: seeded streams, ids, time offsets, categorical draws.

Times are generated as float day offsets from a window start and turned into
`pl.Datetime("us", "UTC")` floored to whole seconds; flooring is monotone, so an ordering that
holds between offsets (created <= activity <= closed) still holds between the datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from salesml.timeutil import DATETIME

WORLD_END = datetime(2025, 7, 1, tzinfo=UTC)
"""The fixed 'now' of every sample world: the demo scores and forecasts as of this instant."""

US_PER_SECOND = 1_000_000
SECONDS_PER_DAY = 86_400
US_PER_DAY = SECONDS_PER_DAY * US_PER_SECOND

# Independent random streams: one seed gives the same world whatever the chunk a row falls in.
STREAM_DEAL_GLOBALS = 1
STREAM_DEAL_CHUNK = 2
STREAM_DEMAND_GLOBALS = 3
STREAM_DEMAND_CHUNK = 4


def rng_for(seed: int, stream: int, chunk: int = 0) -> np.random.Generator:
    """A generator for (seed, stream, chunk); streams never share draws."""
    return np.random.default_rng([seed, stream, chunk])


def check_end(end: datetime) -> datetime:
    """The world's end as tz-aware UTC; a naive end is refused (it would be ambiguous)."""
    if end.tzinfo is None:
        raise ValueError("end must be a timezone-aware datetime (e.g. salesml.sample.WORLD_END)")
    return end.astimezone(UTC)


def epoch_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch of a tz-aware datetime (exact integer arithmetic)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * SECONDS_PER_DAY + delta.seconds) * US_PER_SECOND + delta.microseconds


def midnight_before(moment: datetime) -> datetime:
    """00:00 UTC of the day holding `moment` (the start of the UTC day)."""
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def day_offsets_to_datetime(start_us: int, offset_days: np.ndarray, name: str) -> pl.Series:
    """`start + offset_days` as UTC datetimes floored to the second (NaN -> null)."""
    offsets = np.asarray(offset_days, dtype=np.float64)
    valid = np.isfinite(offsets)
    seconds = np.floor(np.where(valid, offsets, 0.0) * SECONDS_PER_DAY).astype(np.int64)
    values = pl.Series(name, start_us + seconds * US_PER_SECOND, dtype=pl.Int64)
    if not valid.all():
        values = values.scatter(np.flatnonzero(~valid), None)
    return values.cast(DATETIME)


def us_to_datetime(values_us: np.ndarray, name: str) -> pl.Series:
    """Integer epoch microseconds as a UTC datetime series."""
    return pl.Series(name, np.asarray(values_us, dtype=np.int64), dtype=pl.Int64).cast(DATETIME)


def make_ids(prefix: str, numbers: np.ndarray, width: int, name: str) -> pl.Series:
    """Readable fixed-width ids such as D00000042 (vectorised in polars)."""
    digits = pl.Series(name, np.asarray(numbers, dtype=np.int64)).cast(pl.String).str.zfill(width)
    return (prefix + digits).alias(name)


def labels(codes: np.ndarray, vocabulary: tuple[str, ...], name: str) -> pl.Series:
    """Map integer codes to strings; a code outside the vocabulary (e.g. -1) becomes null."""
    mapping = dict(enumerate(vocabulary))
    series = pl.Series(name, np.asarray(codes, dtype=np.int64))
    return series.replace_strict(mapping, default=None, return_dtype=pl.String)


def draw_categorical(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    """One draw per row from softmax(logits) via the Gumbel-max trick (rows x categories)."""
    uniform = rng.random(logits.shape, dtype=np.float32)
    np.clip(uniform, np.float32(1e-12), np.float32(1.0), out=uniform)
    gumbel = -np.log(-np.log(uniform))
    draws: np.ndarray = np.argmax(logits + gumbel, axis=1).astype(np.int8)
    return draws


def draw_from_weights(
    rng: np.random.Generator, weights: tuple[float, ...], size: int
) -> np.ndarray:
    """`size` category codes drawn with fixed (unnormalised) weights."""
    p = np.asarray(weights, dtype=np.float64)
    return rng.choice(len(p), size=size, p=p / p.sum()).astype(np.int16)


def window_start(end: datetime, days: int) -> datetime:
    return end - timedelta(days=days)
