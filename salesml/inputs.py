"""Read and validate input tables in one call: the entry point pipelines and models use.

`load_tables(settings, as_of, names)` reads each table with `salesml.sources.read` (time travel
at the source), then `salesml.validation.validate_tables` (deals first; threshold enforced per
table before anything is written).

What each job needs (SPEC "What each job needs", `validation.JOB_INPUTS`): deal jobs need
`deals` (accounts, activities and the deal histories are optional: absent or empty), demand jobs
need `sales` (signals and inventory optional). By default a table is required, present and with
rows, exactly when some job cannot run without it, so a deal job's table list requires deals
only and a demand job's list requires sales only.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime

import polars as pl

from salesml import contract, sources
from salesml.config import Settings
from salesml.validation import (
    JOB_INPUTS,
    JOB_REQUIRED,
    LATER_PREFIX,
    NEEDED_BY_A_JOB,
    DataValidationError,
    validate_tables,
)

__all__ = [
    "JOB_INPUTS",
    "JOB_REQUIRED",
    "check_some_job_can_run",
    "load_tables",
    "read_tables",
]


def load_tables(
    settings: Settings,
    as_of: datetime | None,
    names: Iterable[str] | None = None,
    required: Collection[str] | None = None,
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """Clean canonical frames known at `as_of`, and the quarantine of rows that failed.

    names: the tables wanted (default: every input table; absent optional ones are skipped).
    required: the tables that must be present and have rows (default: those of `names` some
    job cannot run without, deals and sales); a missing one raises SourceError, an empty one
    DataValidationError; any other table may be absent (no key) or empty.
    Activities and deal histories are checked against valid deals only when "deals" is among
    the tables read. Raises salesml.validation.DataValidationError (one line) when a table
    cannot be used or its share of bad rows is at or above `validation.max_bad_share`.
    """
    wanted = _wanted(names)
    must = _required(wanted, required)
    return validate_tables(read_tables(settings, as_of, wanted, must), settings, as_of, must)


def read_tables(
    settings: Settings,
    as_of: datetime | None,
    names: Iterable[str] | None = None,
    required: Collection[str] | None = None,
) -> dict[str, pl.DataFrame]:
    """The IO half of `load_tables`: raw canonical frames known at `as_of`, not yet validated.

    Flows call this as its own (retried) task and `validate_tables` as a separate, never
    retried one; an absent table that is not required (see `load_tables`) is an absent key.
    With an as_of, tables that rows point at (deals) also come as `later:<table>`: the keys
    and event times of their rows after as_of, so a row pointing at one is quarantined with a
    true reason, not "unknown". Raises SourceError (one line naming table and file) for a
    source polars cannot read or a required table that is not there.
    """
    wanted = _wanted(names)
    must = _required(wanted, required)
    lazy: dict[str, pl.LazyFrame] = {}
    for name in wanted:
        frame = sources.read(name, settings, as_of, required=name in must)
        if frame is not None:
            lazy[name] = frame
    if as_of is not None:
        for table, (_, ref_table, _) in contract.REFERENCES.items():
            if table in lazy and ref_table in lazy and LATER_PREFIX + ref_table not in lazy:
                later = sources.read_later(ref_table, settings, as_of)
                if later is not None:
                    lazy[LATER_PREFIX + ref_table] = later
    return sources.collect_tables(lazy, settings)


def check_some_job_can_run(tables: dict[str, pl.DataFrame], where: str) -> list[str]:
    """The jobs whose required table is among `tables` with rows; raises DataValidationError
    (one line) when there is none, saying what each job needs. `where`: the source, in words.
    """
    ready = [job for job, table in JOB_REQUIRED.items() if _has_rows(tables, table)]
    if not ready:
        needs = "; ".join(
            f"{job} needs {table} ({'empty' if table in tables else 'not found'})"
            for job, table in JOB_REQUIRED.items()
        )
        raise DataValidationError(f"no job can run on {where}: {needs} (check: table_present)")
    return ready


def _has_rows(tables: dict[str, pl.DataFrame], table: str) -> bool:
    return table in tables and tables[table].height > 0


def _wanted(names: Iterable[str] | None) -> list[str]:
    return list(dict.fromkeys(names if names is not None else contract.INPUT_ORDER))


def _required(wanted: list[str], required: Collection[str] | None) -> frozenset[str]:
    if required is None:
        return frozenset(name for name in wanted if name in NEEDED_BY_A_JOB)
    return frozenset(required)
