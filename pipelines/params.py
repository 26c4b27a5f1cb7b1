"""Flow parameters -> library arguments: the config file and the `as_of` a run sees.

A scheduled run's default `as_of` is its *scheduled* time, not the moment a worker picks it
up: a run that starts late, or is retried, still computes the as_of it was scheduled for (and
so rewrites the same rows). A forecast's default is the latest bucket boundary at or before
that time in the configured timezone, so its origin is a whole bucket.
"""

from __future__ import annotations

from datetime import UTC, datetime

from salesml.config import Settings, load
from salesml.timeutil import parse_as_of


def load_settings(config: str | None) -> Settings:
    """The effective Settings of a YAML file (None: the documented defaults)."""
    return load(config)


def scheduled_time() -> datetime:
    """The current flow run's scheduled start (UTC, whole seconds); now outside a flow run."""
    from prefect.runtime import flow_run

    when = flow_run.scheduled_start_time
    value = datetime(
        when.year,
        when.month,
        when.day,
        when.hour,
        when.minute,
        when.second,
        tzinfo=when.tzinfo or UTC,
    )
    return value.astimezone(UTC)


def resolve_as_of(as_of: str | None, settings: Settings) -> datetime:
    """`as_of` as given (ISO; naive = config timezone), else the run's scheduled time."""
    return parse_as_of(as_of if as_of is not None else scheduled_time(), settings.timezone)


def resolve_bucket_as_of(as_of: str | None, settings: Settings) -> datetime:
    """`as_of` as given, else the latest demand bucket boundary at or before the scheduled
    time (buckets are aligned to midnight in the configured timezone).
    """
    from salesml.demand.buckets import origin_end

    if as_of is not None:
        return parse_as_of(as_of, settings.timezone)
    return origin_end(scheduled_time(), settings.timezone, settings.demand.grid.bucket_hours)
