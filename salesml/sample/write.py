"""Write a sample world to a folder of Parquet files, one per canonical table, plus its truth.

Large worlds are written chunk by chunk (row groups appended to one file per table), so memory
stays bounded by one chunk. Each file is written under a temporary name and moved into place
when complete: a crash never leaves a half-written table that looks whole.

A folder source is one world: a sample written beside a user's `deals.csv` would shadow it (or
make the source ambiguous), and beside another world's `sales.parquet` would mix two worlds.
`check_out_folder` refuses both unless forced; replacing an earlier sample's tables is fine.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from salesml.progress import Progress, scaled
from salesml.sample import deals as deals_module
from salesml.sample import demand as demand_module
from salesml.sample._common import WORLD_END, check_end

COMPRESSION = "zstd"
TRUTH_DIR = "truth"
WORLD_FILE = "world.json"


class SampleFolderError(ValueError):
    """The sample would shadow or mix with tables already in its folder; one-line message."""


def check_out_folder(out: Path, tables: Iterable[str], force: bool = False) -> None:
    """Refuse to write `tables` into `out` where other input tables already are.

    Allowed without `force`: an empty or new folder, and an earlier sample's Parquet files
    (its `truth/world.json` is there) of the tables being written again. Anything else in
    the canonical names (`deals.csv`, `sales.parquet` that this sample does not write,
    a `deals/` folder) is named in the error.
    """
    if out.exists() and not out.is_dir():
        raise SampleFolderError(f"sample folder {out} is a file; choose a folder")
    if force or not out.is_dir():
        return
    from salesml.contract import INPUT_ORDER

    earlier_sample = (out / TRUTH_DIR / WORLD_FILE).is_file()
    writing = set(tables)
    clashes = []
    for name in INPUT_ORDER:
        for candidate in (out / f"{name}.parquet", out / f"{name}.csv", out / name):
            if not candidate.exists():
                continue
            replaced = earlier_sample and candidate.suffix == ".parquet" and name in writing
            if not replaced:
                clashes.append(candidate.name + ("/" if candidate.is_dir() else ""))
    if clashes:
        shown = ", ".join(clashes[:5]) + (
            f" and {len(clashes) - 5} more" if len(clashes) > 5 else ""
        )
        raise SampleFolderError(
            f"sample folder {out} already holds input tables the sample would shadow or mix "
            f"with ({shown}); choose an empty folder, or pass --force"
        )


class _ParquetSink:
    """Append frames to one Parquet file per name; files appear only when `close` succeeds."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._writers: dict[str, tuple[pq.ParquetWriter, Path, Path]] = {}

    def append(self, name: str, frame: pl.DataFrame) -> None:
        table = frame.to_arrow()
        if name not in self._writers:
            final = self.out_dir / f"{name}.parquet"
            final.parent.mkdir(parents=True, exist_ok=True)
            partial = final.with_name(final.name + ".partial")
            writer = pq.ParquetWriter(partial, table.schema, compression=COMPRESSION)
            self._writers[name] = (writer, partial, final)
        writer = self._writers[name][0]
        writer.write_table(table.cast(writer.schema))

    def close(self) -> dict[str, Path]:
        paths = {}
        for name, (writer, partial, final) in self._writers.items():
            writer.close()
            partial.replace(final)
            paths[name] = final
        self._writers.clear()
        return paths

    def abort(self) -> None:
        for writer, partial, _ in self._writers.values():
            writer.close()
            partial.unlink(missing_ok=True)
        self._writers.clear()


def _drain(
    sink: _ParquetSink,
    chunks: Iterator[tuple[dict[str, pl.DataFrame], pl.DataFrame]],
    truth_name: str,
) -> None:
    for tables, truth in chunks:
        for name, frame in tables.items():
            sink.append(name, frame)
        sink.append(f"{TRUTH_DIR}/{truth_name}", truth)


def planted_effects() -> dict[str, Any]:
    """Every planted effect and generation constant of both worlds, as plain JSON values."""
    d, m = deals_module, demand_module
    return {
        "deals": {
            "activity_effects": [
                {"activity_type": t, "contact_role": r, "log_odds": v}
                for (t, r), v in d.PLANTED_ACTIVITY_EFFECTS.items()
            ],
            "behavior_half_life_hours": d.BEHAVIOR_HALF_LIFE_HOURS,
            "stage_effects": d.STAGE_EFFECTS,
            "stage_median_days": d.STAGE_MEDIAN_DAYS,
            "dwell_penalty_per_week": d.DWELL_PENALTY_PER_WEEK,
            "slip_effect": d.SLIP_EFFECT,
            "latent_interest_effect": d.LATENT_INTEREST_EFFECT,
            "rep_skill_sd": d.REP_SKILL_SD,
            "industry_effects": d.INDUSTRY_EFFECTS,
            "amount_effect_per_log": d.AMOUNT_EFFECT_PER_LOG,
            "amount_reference": d.AMOUNT_REFERENCE,
            "base_log_odds": d.BASE_LOG_ODDS,
            "null_world_win_rate": d.NULL_WORLD_WIN_RATE,
        },
        "demand": {
            "store_hours_utc": {k: list(v) for k, v in m.STORE_HOURS.items()},
            "closed_buckets": {t: m.closed_buckets(t) for t in m.STORE_TYPES},
            "weekday_factors_monday_first": list(m.WEEKDAY_FACTORS),
            "sunday_closed_share": m.SUNDAY_CLOSED_SHARE,
            "long_tail_sku_share": m.LONG_TAIL_SKU_SHARE,
            "trend_sd_per_30_days": m.TREND_SD_PER_30_DAYS,
            "elasticity_range": list(m.ELASTICITY_RANGE),
            "promo_lift_median": m.PROMO_LIFT_MEDIAN,
            "return_share": m.RETURN_SHARE,
            "delivery_fail_prob": m.DELIVERY_FAIL_PROB,
            "signal_horizon_days": m.SIGNAL_HORIZON_DAYS,
        },
    }


def write_sample(
    out_dir: str | Path,
    *,
    deals: int = 5000,
    series: int = 200,
    days: int = 120,
    seed: int = 0,
    deal_days: int = 730,
    end: datetime = WORLD_END,
    progress: Progress | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Generate both worlds and write them as Parquet (zstd) under `out_dir`.

    `days` is the demand history (sales, inventory; signals run 7 days further); `deal_days`
    the span over which deals are created. `deals=0` or `series=0` skips that world. Returns
    {table name: path}, with the truth under "truth/deals", "truth/demand", "truth/holidays"
    and "truth/world" (a JSON of the arguments and every planted effect). Refuses a folder
    that already holds other input tables unless `force` (`check_out_folder`).
    """
    if deals < 0 or series < 0:
        raise ValueError("deals and series must be >= 0")
    end = check_end(end)
    out = Path(out_dir)
    planned = (deals_module.DEAL_TABLES if deals else ()) + (
        demand_module.DEMAND_TABLES if series else ()
    )
    check_out_folder(out, planned, force)
    out.mkdir(parents=True, exist_ok=True)
    paths = _write_worlds(out, deals, series, days, seed, deal_days, end, progress)
    paths[f"{TRUTH_DIR}/world"] = _write_manifest(out, deals, series, days, seed, deal_days, end)
    return paths


def _write_worlds(
    out: Path,
    deals: int,
    series: int,
    days: int,
    seed: int,
    deal_days: int,
    end: datetime,
    progress: Progress | None,
) -> dict[str, Path]:
    """Stream both worlds' chunks into Parquet; progress split by estimated work (rows)."""
    deal_work = 10.0 * deals
    demand_work = 2.5 * series * days
    split = deal_work / max(deal_work + demand_work, 1.0)

    sink = _ParquetSink(out)
    try:
        if deals:
            chunks = deals_module.deal_chunks(
                deals, deal_days, seed, True, end, scaled(progress, 0.0, split)
            )
            _drain(sink, chunks, "deals")
        if series:
            demand_chunks = demand_module.demand_chunks(
                series, days, seed, end, scaled(progress, split, 1.0)
            )
            _drain(sink, demand_chunks, "demand")
            sink.append(f"{TRUTH_DIR}/holidays", demand_module.holidays_frame())
    except BaseException:
        sink.abort()
        raise
    return sink.close()


def _write_manifest(
    out: Path, deals: int, series: int, days: int, seed: int, deal_days: int, end: datetime
) -> Path:
    """truth/world.json: the generator's arguments and every planted effect."""
    manifest = out / TRUTH_DIR / WORLD_FILE
    manifest.parent.mkdir(parents=True, exist_ok=True)
    world = {
        "seed": seed,
        "end": end.isoformat(),
        "deals": {"n_deals": deals, "days": deal_days, "signal": True},
        "demand": {"n_series": series, "days": days},
        "planted": planted_effects(),
    }
    manifest.write_text(json.dumps(world, indent=2) + "\n")
    return manifest
