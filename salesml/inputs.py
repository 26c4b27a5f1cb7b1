"""Read and validate input tables in one call: the entry point pipelines and models use.

`load_tables(settings, as_of, names)` reads each table with `salesml.sources.read` (time travel
at the source), then `salesml.validation.validate_tables` (deals first; threshold enforced per
table before anything is written).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import polars as pl

from salesml import contract, sources
from salesml.config import Settings
from salesml.validation import validate_tables


def load_tables(
    settings: Settings, as_of: datetime | None, names: Iterable[str] | None = None
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """Clean canonical frames known at `as_of`, and the quarantine of rows that failed.

    names: the tables wanted (default: every input table; absent optional ones are skipped).
    A missing optional table is an absent key; a missing required one raises SourceError.
    Activities and deal histories are checked against valid deals only when "deals" is among
    `names`. Raises salesml.validation.DataValidationError (one line) when a table cannot be
    used or its share of bad rows is at or above `validation.max_bad_share`.
    """
    return validate_tables(read_tables(settings, as_of, names), settings, as_of)


def read_tables(
    settings: Settings, as_of: datetime | None, names: Iterable[str] | None = None
) -> dict[str, pl.DataFrame]:
    """The IO half of `load_tables`: raw canonical frames known at `as_of`, not yet validated.

    Flows call this as its own (retried) task and `validate_tables` as a separate, never
    retried one; a missing optional table is an absent key.
    """
    wanted = list(dict.fromkeys(names if names is not None else contract.INPUT_ORDER))
    lazy = {}
    for name in wanted:
        frame = sources.read(name, settings, as_of)
        if frame is not None:
            lazy[name] = frame
    collected = pl.collect_all(list(lazy.values()))
    return dict(zip(lazy, collected, strict=True))
