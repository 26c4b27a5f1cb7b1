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
from salesml.validation import LATER_PREFIX, validate_tables


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
    retried one; a missing optional table is an absent key. With an as_of, tables that rows
    point at (deals) also come as `later:<table>`: the keys and event times of their rows
    after as_of, so a row pointing at one is quarantined with a true reason, not "unknown".
    Raises SourceError (one line naming table and file) for a source polars cannot read.
    """
    wanted = list(dict.fromkeys(names if names is not None else contract.INPUT_ORDER))
    lazy: dict[str, pl.LazyFrame] = {}
    for name in wanted:
        frame = sources.read(name, settings, as_of)
        if frame is not None:
            lazy[name] = frame
    if as_of is not None:
        for table, (_, ref_table, _) in contract.REFERENCES.items():
            if table in lazy and ref_table in lazy and LATER_PREFIX + ref_table not in lazy:
                later = sources.read_later(ref_table, settings, as_of)
                if later is not None:
                    lazy[LATER_PREFIX + ref_table] = later
    return sources.collect_tables(lazy, settings)
