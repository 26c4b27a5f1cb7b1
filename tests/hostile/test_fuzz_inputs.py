"""Fuzzed input folders (issue 11, item 7): whatever a table file holds, `salesml validate` exits 0
or fails with one line naming the table, never shows a traceback, never writes an output table,
never drops a row silently and never lets a non-finite or absurd number through unquarantined.

Each example copies a tiny valid world, rewrites ONE table file (as CSV or Parquet) with one
mutation (encodings, truncation, random bytes, files that are not what their name says, extreme
numbers, odd names and values, broken headers) and runs `salesml validate` in-process. Runs are
reproducible (`derandomize=True`, no example database) and do not shrink: a failure reports the
first failing example, described by hypothesis' `note` lines.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from polars.testing import assert_frame_equal

from salesml.contract import INPUT_ORDER, input_columns
from salesml.warehouse import Warehouse
from tests.hostile.clitools import error_line, run_cli
from tests.hostile.conftest import AS_OF, FuzzWorld, write_config


def fuzz_settings(examples: int) -> settings:
    """Reproducible, bounded, no shrinking (each example runs a whole validate)."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=(
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ),
    )


DEPENDENTS: dict[str, tuple[str, ...]] = {
    "deals": ("activities", "deal_stage_history", "deal_close_date_history"),
}
"""Tables checked against another: a broken `deals` may be reported through them."""

NON_NEGATIVE = {"amount", "employees", "annual_revenue", "unit_price"}
BOUNDED = {"amount", "quantity"}
BOUND = 1e12
"""Issue 11 item 2: amount and quantity are sane below 1e12 by default."""


def describe(text: str) -> None:
    """A hypothesis note (shown with a failing example); nothing outside a hypothesis test."""
    if currently_in_test_context():
        note(text)


# ---------------------------------------------------------------------------------------------
# One mutated table
# ---------------------------------------------------------------------------------------------
@dataclass
class Case:
    """One table file rewritten; what the checks after the run need to know about it."""

    table: str
    suffix: str  # "csv" or "parquet"
    payload: bytes
    records: int | None = None
    """Data records the file holds (None: unknown): exit 0 must account for each of them,
    kept or quarantined."""
    must_quarantine: bool = False
    """A value was planted that validation must quarantine (a non-finite or absurd number)."""
    max_bad_share: float = 0.01
    encoding: str | None = None
    """`sources.encoding` for the table (the file's true encoding: then it is clean)."""
    clean: bool = False
    """A valid file: it must validate with every record kept and nothing quarantined."""


def csv_bytes(frame: pl.DataFrame) -> bytes:
    return frame.write_csv().encode("utf-8")


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def encode(frame: pl.DataFrame, suffix: str) -> bytes:
    return csv_bytes(frame) if suffix == "csv" else parquet_bytes(frame)


def text_columns(table: str, frame: pl.DataFrame) -> list[str]:
    return [c for c, dtype in frame.schema.items() if dtype == pl.String()]


def float_columns(table: str) -> list[str]:
    return [c for c, spec in input_columns(table).items() if spec.dtype == pl.Float64()]


def datetime_columns(frame: pl.DataFrame) -> list[str]:
    return [c for c, dtype in frame.schema.items() if isinstance(dtype, pl.Datetime)]


def set_rows(frame: pl.DataFrame, column: str, rows: list[int], value: object) -> pl.DataFrame:
    """`frame` with `column` set to `value` in `rows` (the column cast to the value's type)."""
    dtype = frame.schema[column]
    if isinstance(value, str):
        dtype = pl.String()
    elif isinstance(value, float):
        dtype = pl.Float64()
    hit = pl.int_range(pl.len()).is_in(rows)
    return frame.with_columns(
        pl.when(hit)
        .then(pl.lit(value, dtype=dtype))
        .otherwise(pl.col(column).cast(dtype))
        .alias(column)
    )


def draw_table(data: st.DataObject, world: FuzzWorld, salt: str = "") -> str:
    """A table name; `salt` (a parametrized case's name) shifts the choice, so cases that
    share hypothesis' derandomized draws still land on different tables."""
    tables = sorted(world.frames)
    shift = sum(salt.encode()) % len(tables)
    return tables[(data.draw(st.integers(0, len(tables) - 1), "table index") + shift) % len(tables)]


def draw_rows(data: st.DataObject, frame: pl.DataFrame) -> list[int]:
    last = frame.height - 1
    return sorted(data.draw(st.sets(st.integers(0, last), min_size=1, max_size=3), "rows"))


# ---------------------------------------------------------------------------------------------
# Running one case and the promises checked after it
# ---------------------------------------------------------------------------------------------
def run_case(world: FuzzWorld, case: Case) -> None:
    """Write the world with `case` applied, validate it, check every promise."""
    with tempfile.TemporaryDirectory(prefix="salesml-fuzz-") as tmp:
        root = Path(tmp)
        data = root / "data"
        shutil.copytree(world.data, data)
        (data / f"{case.table}.parquet").unlink()
        (data / f"{case.table}.{case.suffix}").write_bytes(case.payload)
        warehouse = root / "warehouse.duckdb"
        shutil.copyfile(world.warehouse, warehouse)
        config = write_config(
            root / "salesml.yaml",
            data,
            warehouse,
            root / "mlflow.db",
            validation={"max_bad_share": case.max_bad_share},
            **({"sources": {"encoding": {case.table: case.encoding}}} if case.encoding else {}),
        )
        result = run_cli(["validate", "--config", str(config), "--as-of", AS_OF.isoformat()])
        describe(f"exit {result.exit_code}; stderr {result.stderr[-500:]!r}")
        line = error_line(result)
        if currently_in_test_context():  # pytest --hypothesis-show-statistics shows the mix
            event("exit 0" if line is None else "one-line error")
        assert line is None or not case.clean, f"a valid {case.table}.{case.suffix}: {line}"
        if line is not None:
            named = (case.table, *DEPENDENTS.get(case.table, ()))
            assert any(name in line for name in named), f"error names no table {named}: {line}"
        check_warehouse(world, Warehouse(f"duckdb:///{warehouse}"), case, failed=line is not None)


def check_warehouse(world: FuzzWorld, store: Warehouse, case: Case, *, failed: bool) -> None:
    """Outputs untouched; the run closed; every row kept or quarantined; no silent numbers."""
    for table, before in world.seeded.items():
        assert_frame_equal(store.read(table), before, check_row_order=False)
    extra = set(store.tables()) - {*world.seeded, "runs", "quarantine"}
    assert not extra, f"validate wrote output tables {sorted(extra)}"
    runs = store.read("runs") if "runs" in store.tables() else pl.DataFrame()
    statuses = runs["status"].to_list() if runs.height else []
    assert "running" not in statuses, "a finished command left its run 'running'"
    assert statuses.count("succeeded") == (0 if failed else 1), statuses
    if failed:
        return
    run = runs.filter(pl.col("status") == "succeeded").row(0, named=True)
    kept = json.loads(run["row_counts"] or "{}").get(f"input_{case.table}", 0)
    quarantined = 0
    if "quarantine" in store.tables():
        rows = store.read("quarantine").filter(
            (pl.col("run_id") == run["run_id"]) & (pl.col("table_name") == case.table)
        )
        quarantined = rows.height
    describe(f"kept {kept}, quarantined {quarantined} of {case.table}")
    if case.records is not None:
        assert kept + quarantined >= case.records, (
            f"{case.table}: {case.records} records in the file, {kept} kept and "
            f"{quarantined} quarantined: rows were dropped silently"
        )
    if case.must_quarantine:
        assert quarantined > 0, f"{case.table}: a non-finite or absurd number passed validation"
    if case.clean:
        assert (kept, quarantined) == (case.records, 0), f"{case.table}: valid rows lost"


# ---------------------------------------------------------------------------------------------
# The sanity of the harness itself
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["csv", "parquet"])
@pytest.mark.parametrize("table", INPUT_ORDER)
def test_the_unmutated_world_validates_clean(
    fuzz_world: FuzzWorld, table: str, suffix: str
) -> None:
    """A table rewritten unchanged validates with every row kept (so every failure in the fuzz
    tests below is the mutation's doing)."""
    frame = fuzz_world.frames[table]
    case = Case(table, suffix, encode(frame, suffix), records=frame.height, clean=True)
    run_case(fuzz_world, case)


# ---------------------------------------------------------------------------------------------
# Bytes of a CSV: encodings, truncation, random bytes, empty files
# ---------------------------------------------------------------------------------------------
ACCENTED = "Müller Café Straße señor naïve"
WINDOWS = "Crème brûlée – “quoted” €5"


def _with_text(frame: pl.DataFrame, table: str, text: str) -> pl.DataFrame:
    """Non-ASCII `text` in every row of a free-text column (ids and codes untouched): the
    table's first one, else an extra column `note` (extra columns are kept)."""
    free = [
        c
        for c in text_columns(table, frame)
        if not c.endswith("_id") and c not in {"outcome", "sku", "name", "activity_type", "stage"}
    ]
    return frame.with_columns(pl.lit(text).alias(free[0] if free else "note"))


def _cut(data: st.DataObject, raw: bytes, low: int = 0) -> int:
    return data.draw(st.integers(low, max(low, len(raw) - 1)), "cut at byte")


CSV_OPS = (
    "latin-1",
    "cp1252",
    "utf-16",
    "utf-8-bom",
    "truncate-anywhere",
    "truncate-last-line",
    "splice-random-bytes",
    "overwrite-random-bytes",
    "only-random-bytes",
    "empty",
    "header-only",
    "nul-bytes",
    "crlf",
    "cr-only",
    "no-final-newline",
    "stray-quote",
)


def mutate_csv_bytes(op: str, data: st.DataObject, table: str, frame: pl.DataFrame) -> Case:
    raw = csv_bytes(frame)
    lines = raw.splitlines(keepends=True)
    records: int | None = None
    if op == "latin-1":
        payload = _with_text(frame, table, ACCENTED).write_csv().encode("latin-1")
        records = frame.height
    elif op == "cp1252":
        payload = _with_text(frame, table, WINDOWS).write_csv().encode("cp1252")
        records = frame.height
    elif op == "utf-16":
        payload = frame.write_csv().encode("utf-16")
        records = frame.height
    elif op == "utf-8-bom":
        payload = b"\xef\xbb\xbf" + raw
        records = frame.height
    elif op == "truncate-anywhere":
        payload = raw[: _cut(data, raw)]
        # every line after the header that has at least one byte is a record someone sent
        records = max(0, len([x for x in payload.split(b"\n")[1:] if x]))
    elif op == "truncate-last-line":
        start = len(raw) - len(lines[-1])
        payload = raw[: data.draw(st.integers(start + 1, len(raw) - 2), "cut at byte")]
        records = frame.height
    elif op == "splice-random-bytes":
        junk = data.draw(st.binary(min_size=1, max_size=64), "junk")
        at = _cut(data, raw)
        payload = raw[:at] + junk + raw[at:]
    elif op == "overwrite-random-bytes":
        junk = data.draw(st.binary(min_size=1, max_size=64), "junk")
        at = _cut(data, raw)
        payload = raw[:at] + junk + raw[at + len(junk) :]
    elif op == "only-random-bytes":
        payload = data.draw(st.binary(min_size=1, max_size=2048), "bytes")
    elif op == "empty":
        payload = b""
    elif op == "header-only":
        payload = lines[0]
    elif op == "nul-bytes":
        at = _cut(data, raw)
        payload = raw[:at] + b"\x00" * data.draw(st.integers(1, 8), "nuls") + raw[at:]
    elif op == "crlf":
        payload = raw.replace(b"\n", b"\r\n")
        records = frame.height
    elif op == "cr-only":
        payload = raw.replace(b"\n", b"\r")
    elif op == "no-final-newline":
        payload = raw.rstrip(b"\n")
        records = frame.height
    else:  # stray-quote
        at = _cut(data, raw, low=len(lines[0]))
        payload = raw[:at] + b'"' + raw[at:]
    case = Case(table, "csv", payload, records=records)
    if op in {"latin-1", "cp1252", "utf-16"} and data.draw(st.booleans(), "encoding set"):
        case.encoding, case.clean = op, True
    describe(f"{table}.csv: {op} ({len(payload)} bytes), sources.encoding {case.encoding}")
    return case


@pytest.mark.parametrize("op", CSV_OPS)
@fuzz_settings(examples=3)
@given(data=st.data())
def test_csv_bytes(fuzz_world: FuzzWorld, op: str, data: st.DataObject) -> None:
    table = draw_table(data, fuzz_world, salt=op)
    case = mutate_csv_bytes(op, data, table, fuzz_world.frames[table])
    if case.encoding is None:
        case.max_bad_share = data.draw(st.sampled_from([0.01, 0.5]), "max_bad_share")
    run_case(fuzz_world, case)


@pytest.mark.parametrize(
    ("table", "encoding", "text"),
    [
        ("deals", "latin-1", ACCENTED),
        ("activities", "cp1252", WINDOWS),
        ("sales", "utf-16", WINDOWS),
    ],
)
def test_a_csv_in_its_configured_encoding_reads_clean(
    fuzz_world: FuzzWorld, table: str, encoding: str, text: str
) -> None:
    frame = _with_text(fuzz_world.frames[table], table, text)
    payload = frame.write_csv().encode(encoding)
    case = Case(table, "csv", payload, records=frame.height, encoding=encoding, clean=True)
    run_case(fuzz_world, case)


# ---------------------------------------------------------------------------------------------
# Files named .parquet that are not (whole) Parquet files
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "op", ["csv-text", "empty", "truncated", "magic-only", "random-bytes", "damaged-middle"]
)
@fuzz_settings(examples=3)
@given(data=st.data())
def test_parquet_files_that_are_not_parquet(
    fuzz_world: FuzzWorld, op: str, data: st.DataObject
) -> None:
    table = draw_table(data, fuzz_world, salt=op)
    frame = fuzz_world.frames[table]
    good = parquet_bytes(frame)
    if op == "csv-text":
        payload = csv_bytes(frame)
    elif op == "empty":
        payload = b""
    elif op == "truncated":
        payload = good[: data.draw(st.integers(0, len(good) - 1), "cut at byte")]
    elif op == "magic-only":
        payload = b"PAR1"
    elif op == "random-bytes":
        payload = data.draw(st.binary(min_size=1, max_size=2048), "bytes")
    else:  # damaged-middle: valid magic and footer, junk inside
        at = data.draw(st.integers(4, len(good) // 2), "at")
        junk = data.draw(st.binary(min_size=8, max_size=256), "junk")
        payload = good[:at] + junk + good[at + len(junk) :]
    describe(f"{table}.parquet: {op} ({len(payload)} bytes)")
    run_case(fuzz_world, Case(table, "parquet", payload))


# ---------------------------------------------------------------------------------------------
# Extreme numbers
# ---------------------------------------------------------------------------------------------
NUMBER_TEXT = [
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1e308",
    "-1e308",
    "1e309",
    "9223372036854775807",
    "99999999999999999999999999999",
    "-0",
    "5e-324",
    "1e12",
]
NUMBER_VALUES = [math.nan, math.inf, -math.inf, 1e308, -1e308, 9.3e18, 1e30, -0.0, 5e-324, 1e12]


def must_quarantine(column: str, value: float) -> bool:
    """What validation must catch: non-finite anywhere, absurd amounts and quantities,
    negatives where the contract says >= 0."""
    if not math.isfinite(value):
        return True
    if column in BOUNDED and value >= BOUND:
        return True
    return column in NON_NEGATIVE and value < 0


@fuzz_settings(examples=25)
@given(data=st.data())
def test_extreme_numbers(fuzz_world: FuzzWorld, data: st.DataObject) -> None:
    tables = sorted(t for t in fuzz_world.frames if float_columns(t))
    table = data.draw(st.sampled_from(tables), "table")
    frame = fuzz_world.frames[table]
    column = data.draw(st.sampled_from(float_columns(table)), "column")
    suffix = data.draw(st.sampled_from(["csv", "parquet"]), "format")
    rows = draw_rows(data, frame)
    if suffix == "csv":
        text = data.draw(st.sampled_from(NUMBER_TEXT), "value")
        value = float(text)
        mutated = set_rows(frame.with_columns(pl.col(column).cast(pl.String)), column, rows, text)
    else:
        value = data.draw(st.sampled_from(NUMBER_VALUES), "value")
        mutated = set_rows(frame, column, rows, value)
    describe(f"{table}.{suffix}: {column} = {value!r} in rows {rows}")
    case = Case(
        table,
        suffix,
        encode(mutated, suffix),
        records=frame.height,
        must_quarantine=must_quarantine(column, value),
        max_bad_share=data.draw(st.sampled_from([0.01, 0.5]), "max_bad_share"),
    )
    run_case(fuzz_world, case)


# ---------------------------------------------------------------------------------------------
# Odd names and values
# ---------------------------------------------------------------------------------------------
ODD_TEXT = [
    "Zoë 🚀 日本語",
    "\u202eevil\u202c",
    "zero\u200bwidth",
    "lead:source{x}",
    "<script>alert(1)</script>",
    "'; DROP TABLE quarantine; --",
    '"quoted", with comma',
    "two\nlines",
    "tab\tseparated",
    "x" * 100_000,
    "",
    " ",
    "NULL",
    "None",
    "\\N",
    "Demo",
    "DEMO",
    " demo ",
    "Proposal Sent",
    "proposal-sent",
    "E-Mail",
]

ODD_DATETIMES = [
    "9999-12-31",
    "0001-01-01",
    "2200-01-01T00:00:00",
    "2025-02-30",
    "2025-06-01T25:00:00",
    "2025-03-30 02:30:00",
    "2025-06-01T12:00:00+14:00",
    "1970-01-01",
    "yesterday",
    "-1",
    "1e308",
    "",
]


@fuzz_settings(examples=25)
@given(data=st.data())
def test_odd_values(fuzz_world: FuzzWorld, data: st.DataObject) -> None:
    table = draw_table(data, fuzz_world)
    frame = fuzz_world.frames[table]
    suffix = data.draw(st.sampled_from(["csv", "parquet"]), "format")
    rows = draw_rows(data, frame)
    kind = data.draw(st.sampled_from(["text", "datetime"]), "kind")
    records: int | None = frame.height
    if kind == "text" or suffix == "parquet":
        column = data.draw(st.sampled_from(text_columns(table, frame)), "column")
        value = data.draw(st.sampled_from(ODD_TEXT), "value")
    else:  # a datetime as text a CSV may hold
        column = data.draw(st.sampled_from(datetime_columns(frame)), "column")
        value = data.draw(st.sampled_from(ODD_DATETIMES), "value")
        records = None  # a row moved past as_of is out of view by design, not dropped
    describe(f"{table}.{suffix}: {column} = {value[:40]!r} in rows {rows}")
    mutated = set_rows(frame, column, rows, value)
    case = Case(
        table,
        suffix,
        encode(mutated, suffix),
        records=records,
        max_bad_share=data.draw(st.sampled_from([0.01, 0.5]), "max_bad_share"),
    )
    run_case(fuzz_world, case)


# ---------------------------------------------------------------------------------------------
# Broken structure: missing, duplicated, renamed and extra columns; duplicated rows
# ---------------------------------------------------------------------------------------------
def _duplicate_header(frame: pl.DataFrame, data: st.DataObject) -> bytes:
    names = frame.columns
    i, j = data.draw(
        st.lists(st.integers(0, len(names) - 1), min_size=2, max_size=2, unique=True), "pair"
    )
    header = [names[j] if k == i else name for k, name in enumerate(names)]
    body = frame.write_csv(include_header=False)
    return (",".join(header) + "\n" + body).encode("utf-8")


STRUCTURE_OPS = (
    "drop-column",
    "duplicate-header",
    "upper-case-headers",
    "title-case-one-header",
    "spaces-around-one-header",
    "odd-extra-columns",
    "reversed-columns",
    "duplicated-rows",
    "no-rows",
    "every-value-null",
)


def mutate_structure(op: str, frame: pl.DataFrame, data: st.DataObject) -> pl.DataFrame | bytes:
    if op == "duplicate-header":
        return _duplicate_header(frame, data)
    if op == "upper-case-headers":
        return frame.rename({c: c.upper() for c in frame.columns})
    if op == "odd-extra-columns":
        return frame.with_columns(
            pl.lit("x").alias("lead:source{x}"),
            pl.lit(1.0).alias("<script>"),
            pl.lit(None, pl.String).alias("Ünïcode col"),
        )
    if op == "reversed-columns":
        return frame.select(reversed(frame.columns))
    if op == "duplicated-rows":
        return pl.concat([frame, frame.head(data.draw(st.integers(1, 5), "duplicates"))])
    if op == "no-rows":
        return frame.clear()
    if op == "every-value-null":
        return frame.with_columns(pl.lit(None, dtype).alias(c) for c, dtype in frame.schema.items())
    column = data.draw(st.sampled_from(frame.columns), "column")
    if op == "drop-column":
        return frame.drop(column)
    if op == "title-case-one-header":
        return frame.rename({column: column.title()})
    return frame.rename({column: f" {column} "})  # spaces-around-one-header


@pytest.mark.parametrize("op", STRUCTURE_OPS)
@fuzz_settings(examples=2)
@given(data=st.data())
def test_broken_structure(fuzz_world: FuzzWorld, op: str, data: st.DataObject) -> None:
    table = draw_table(data, fuzz_world, salt=op)
    frame = fuzz_world.frames[table]
    suffix = "csv" if op == "duplicate-header" else data.draw(st.sampled_from(["csv", "parquet"]))
    mutated = mutate_structure(op, frame, data)
    payload = mutated if isinstance(mutated, bytes) else encode(mutated, suffix)
    records = None
    if op in {"reversed-columns", "duplicated-rows", "odd-extra-columns"}:
        assert isinstance(mutated, pl.DataFrame)
        records = mutated.height
    describe(f"{table}.{suffix}: {op}")
    run_case(fuzz_world, Case(table, suffix, payload, records=records, max_bad_share=0.5))
