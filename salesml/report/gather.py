"""`gather(settings, as_of) -> ReportData`: the report's IO (warehouse, sources, MLflow).

Reads through the owners of IO only: `Warehouse.read` for output tables, `inputs.load_tables`
for deals (outcomes known at as_of, for calibration) and sales (actuals), `tracking` (never
MLflow's client directly) for the holdout calibration plot and the gate's numbers. Nothing here fails the report because a table is missing
or a source cannot be read: the problem becomes a note in the section that needed it. A locked
warehouse (`WarehouseLockedError`) is the exception: it is raised, since retrying later works.
"""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta

import polars as pl

from salesml.config import Settings
from salesml.contract import empty_frame
from salesml.errors import first_line
from salesml.report import prepare
from salesml.report.data import (
    LATEST_BEFORE_TABLES,
    OUTPUT_TABLES,
    ReportData,
    ReportOptions,
    missing_note,
)
from salesml.timeutil import DATETIME
from salesml.warehouse import Warehouse

DEAL_MODEL = "salesml-deal-win"
DEMAND_MODEL = "salesml-demand"
ALWAYS_SHOWN = ("quarantine", "runs")
"""Tables kept even when they never had a row (an empty quarantine is news)."""
HOLDOUT_CALIBRATION_ARTIFACT = "calibration.png"
DEAL_INFO_COLUMNS = (
    "deal_id",
    "account_id",
    "owner_id",
    "region",
    "product",
    "amount",
    "expected_close_at",
)


def gather(settings: Settings, as_of: datetime, options: ReportOptions | None = None) -> ReportData:
    """Read everything the report for `as_of` shows (tz-aware `as_of`)."""
    options = options or ReportOptions()
    as_of = as_of.astimezone(UTC)
    wh = Warehouse.from_settings(settings)
    present = set(wh.tables())
    tables, notes = _read_outputs(wh, present, as_of)
    deals, deals_problem = _load_input(settings, as_of, "deals")
    deal_info = None
    if deals is not None:
        deal_info = deals.select([c for c in DEAL_INFO_COLUMNS if c in deals.columns])
    calibration, note = _calibration(wh, "deal_scores" in present, deals, deals_problem, as_of)
    if note:
        notes["calibration"] = note
    png = label = None
    if calibration is None or calibration.height == 0:
        png, label = _holdout_calibration(settings, tables.get("deal_scores"))
    gate = _deal_gate(settings, tables.get("deal_scores"), as_of)
    demand_gate = _deal_gate(
        settings, tables.get("demand_forecast"), as_of, DEMAND_MODEL, DEMAND_GATE_METRICS
    )
    actuals, note = _actuals(settings, tables.get("demand_forecast"), as_of, options)
    if note:
        notes["actuals"] = note
    model_quality = _model_quality(wh, present, as_of)
    return ReportData(
        as_of=as_of,
        generated_at=datetime.now(UTC).replace(microsecond=0),
        timezone=settings.timezone,
        warehouse=_display(wh),
        bucket_hours=settings.demand.grid.bucket_hours,
        tables=tables,
        notes=notes,
        deal_info=deal_info,
        calibration=calibration,
        holdout_calibration_png=png,
        holdout_calibration_label=label,
        actuals=actuals,
        deal_gate=gate,
        demand_gate=demand_gate,
        model_quality=model_quality,
        options=options,
    )


def _read_outputs(
    wh: Warehouse, present: set[str], as_of: datetime
) -> tuple[dict[str, pl.DataFrame], dict[str, str]]:
    """The output tables for as_of (an absent table: a note instead) and the alerts of as_of."""
    tables: dict[str, pl.DataFrame] = {}
    notes: dict[str, str] = {}
    for name in OUTPUT_TABLES:
        if name not in present:
            notes[name] = missing_note(name, False, as_of, None)
            continue
        frame, note = _read_table(wh, name, as_of)
        frame = _baseline_only(frame)
        if note:
            notes[name] = note
        if frame.height == 0 and name not in ALWAYS_SHOWN and wh.latest_as_of(name) is None:
            continue  # never had a row (e.g. behaviour without activities): as if absent
        tables[name] = frame

    alerts = _alerts(wh, present, as_of)
    if alerts is not None:
        tables["alerts"] = alerts
        if alerts.height == 0:
            notes["alerts"] = f"No alert was open or resolved at as_of {as_of.isoformat()}."
    if "quarantine" not in tables and tables.get("runs") is not None and tables["runs"].height:
        # runs happened but none set a row aside, so the table was never created
        tables["quarantine"] = empty_frame("quarantine")
        notes.pop("quarantine", None)
    return tables, notes


def _baseline_only(frame: pl.DataFrame, scenario: str = "baseline") -> pl.DataFrame:
    """The rows of one scenario (what-ifs sit next to the baseline in demand_forecast; rows
    written before scenarios existed have none and count as the baseline).
    """
    if "scenario" not in frame.columns:
        return frame
    wanted = pl.col("scenario") == scenario
    if scenario == "baseline":
        wanted = wanted | pl.col("scenario").is_null()
    return frame.filter(wanted)


def _read_table(wh: Warehouse, name: str, as_of: datetime) -> tuple[pl.DataFrame, str | None]:
    """Rows of `name` for as_of (training tables: the latest as_of at or before it)."""
    frame = wh.read(name, as_of=as_of)
    if frame.height or name in ("quarantine",):
        return frame, None
    if name in LATEST_BEFORE_TABLES:
        every = wh.read(name)
        earlier = every.filter(pl.col("as_of") <= pl.lit(as_of, DATETIME))
        if earlier.height:
            latest = earlier["as_of"].max()
            assert isinstance(latest, datetime)
            note = f"From the deal-win model trained as of {latest:%Y-%m-%d %H:%M} UTC."
            return earlier.filter(pl.col("as_of") == latest), note
    return frame, missing_note(name, True, as_of, wh.latest_as_of(name))


def _model_quality(wh: Warehouse, present: set[str], as_of: datetime) -> pl.DataFrame | None:
    """The quality history up to `as_of` (every backtest and realised check written then)."""
    if "model_quality" not in present:
        return None
    return wh.read("model_quality").filter(pl.col("as_of") <= pl.lit(as_of, DATETIME))


def _alerts(wh: Warehouse, present: set[str], as_of: datetime) -> pl.DataFrame | None:
    """The alerts open at `as_of` or resolved at it (`prepare.alerts_at`); the table is keyed
    by alert_key, not as_of, so it is read whole. None when it is absent or never had a row.
    """
    if "alerts" not in present:
        return None
    every = wh.read("alerts")
    return prepare.alerts_at(every, as_of) if every.height else None


def _load_input(
    settings: Settings, as_of: datetime, name: str
) -> tuple[pl.DataFrame | None, str | None]:
    """An input table as known at `as_of`, or (None, why) when it cannot be read or validated."""
    from salesml.inputs import load_tables

    try:
        tables, _quarantine = load_tables(settings, as_of, [name])
    except Exception as exc:  # any source or validation problem: the report goes on without it
        return None, f"{name} could not be read: {first_line(exc)}"
    return tables.get(name), None


def _calibration(
    wh: Warehouse,
    has_scores: bool,
    deals: pl.DataFrame | None,
    deals_problem: str | None,
    as_of: datetime,
) -> tuple[pl.DataFrame | None, str | None]:
    """Past predictions whose deals closed by as_of (see `prepare.calibration_pairs`)."""
    if not has_scores:
        return None, None
    if deals is None:
        return None, f"no calibration from past scores: {deals_problem}"
    past = wh.read("deal_scores").select("as_of", "deal_id", "win_probability")
    return prepare.calibration_pairs(past, deals, as_of), None


def _holdout_calibration(
    settings: Settings, scores: pl.DataFrame | None
) -> tuple[bytes | None, str | None]:
    """The calibration plot logged with the deal-win model that wrote the scores (else champion).

    Only looks when the MLflow store exists (a fresh SQLite store would be created and
    migrated otherwise); any MLflow problem means no plot.
    """
    from salesml import tracking

    db = tracking.sqlite_path(settings.mlflow.tracking_uri)
    if db is not None and not db.is_file():
        return None, None
    version = None
    if scores is not None and "model_version" in scores.columns and scores.height:
        version = scores["model_version"].drop_nulls().max()
    try:
        return _download_calibration(settings, None if version is None else str(version))
    except Exception:  # no registry, no artifact, unreachable server: the section says so
        return None, None


def _download_calibration(
    settings: Settings, version: str | None
) -> tuple[bytes | None, str | None]:
    from salesml import tracking

    tracking.configure(settings)
    if version is None:
        info = tracking.champion_info(DEAL_MODEL)
        if info is None:
            return None, None
        version, run_id = info.version, info.run_id
    else:
        run_id = tracking.version_run_id(DEAL_MODEL, version)
    png = tracking.read_artifact(run_id, HOLDOUT_CALIBRATION_ARTIFACT)
    return png, f"{DEAL_MODEL} v{version}"


GATE_METRICS = ("brier_skill", "brier", "base_rate", "logistic", "auc")
"""Holdout metrics shown with the skill gate: those whose name holds one of these words."""
DEMAND_GATE_METRICS = ("pinball_scaled", "holdout_wape", "holdout_coverage_p10_p90")
"""Held-out metrics shown with the demand gate (scaled pinball loss, model and 8-week median)."""


def _deal_gate(
    settings: Settings,
    scores: pl.DataFrame | None,
    as_of: datetime,
    model: str = DEAL_MODEL,
    words: tuple[str, ...] = GATE_METRICS,
) -> dict[str, str] | None:
    """The gate decision and holdout numbers of the `model` version behind the scores (or the
    demand forecast, with `DEMAND_MODEL` and `DEMAND_GATE_METRICS`).

    Scores from no model (the base rate) name no version: then the newest version trained at
    or before as_of, the candidate the gate refused. None when there are no scores, no
    MLflow store, or anything about MLflow fails (the report goes on without it).
    """
    from salesml import tracking

    if scores is None or scores.height == 0:
        return None
    db = tracking.sqlite_path(settings.mlflow.tracking_uri)
    if db is not None and not db.is_file():
        return None
    version = None
    if "model_version" in scores.columns:
        version = scores["model_version"].drop_nulls().max()
    try:
        return _read_gate(settings, None if version is None else str(version), as_of, model, words)
    except Exception:  # no registry, no run, unreachable server: no gate table
        return None


def _read_gate(
    settings: Settings,
    version: str | None,
    as_of: datetime,
    model: str = DEAL_MODEL,
    words: tuple[str, ...] = GATE_METRICS,
) -> dict[str, str] | None:
    from salesml import tracking

    tracking.configure(settings)
    if version is None:
        earlier = [v for v in tracking.list_versions(model) if v.as_of is None or v.as_of <= as_of]
        if not earlier:
            return None
        version = earlier[-1].version
    run = tracking.version_run(model, version)
    tags = run.tags
    prefix = tracking.TAG_PREFIX
    out = {"model version": f"v{version}"}
    if f"{prefix}.promoted" in tags:
        out["promoted"] = tags[f"{prefix}.promoted"]
    if tracking.GATE_TAG in tags:
        out["passed the gate"] = tags[tracking.GATE_TAG]
    if f"{prefix}.reason" in tags:
        out["decision"] = tags[f"{prefix}.reason"]
    for name, value in sorted(run.metrics.items()):
        if any(word in name for word in words):
            out[name] = f"{value:.4f}"
    return out


def _actuals(
    settings: Settings, forecast: pl.DataFrame | None, as_of: datetime, options: ReportOptions
) -> tuple[pl.DataFrame | None, str | None]:
    """Bucketed sales of the series shown, from history_days before as_of to the forecast end.

    Sales after as_of (a past as_of) are read for display only; the read covers the forecast
    window, so it uses `load_tables` at the forecast end.
    """
    if forecast is None or forecast.height == 0:
        return None, None
    hours = settings.demand.grid.bucket_hours
    last_start = forecast["bucket_start"].max()
    assert isinstance(last_start, datetime)
    end = max(last_start + timedelta(hours=hours), as_of)
    sales, problem = _load_input(settings, end, "sales")
    if sales is None:
        return None, f"actual sales not shown: {problem or 'no sales table'}"
    series = prepare.top_series(forecast, options.demand_series)
    actuals = prepare.bucket_actuals(
        sales,
        series,
        as_of=as_of,
        first=as_of - timedelta(days=options.history_days),
        last=end,
        demand=settings.demand,
        timezone=settings.timezone,
    )
    return actuals, None


def _display(wh: Warehouse) -> str:
    """The warehouse as `Warehouse.__repr__` shows it (a PostgreSQL password masked)."""
    text = repr(wh)
    inner = text.removeprefix("Warehouse(").removesuffix(")")
    value = ast.literal_eval(inner) if inner[:1] in "'\"" else inner
    return str(value)
