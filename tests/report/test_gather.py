"""gather(settings, as_of) reads the warehouse and sources; build() writes one HTML file."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl

from salesml.config import Settings
from salesml.report import ReportOptions, build, default_path
from salesml.report.data import ReportData
from salesml.report.gather import gather
from tests.report.synthetic import AS_OF, BEHAVIOR_AS_OF, PAST_AS_OF, World

NO_CHARTS = ReportOptions(at_risk_cards=0, demand_series=1)


def test_gather_reads_the_tables_of_this_as_of(gathered: ReportData, world: World) -> None:
    data = gathered
    expected = world.outputs[AS_OF]
    for name, frame in expected.items():
        if name == "alerts":  # keyed by alert_key, read whole (see the alerts test)
            continue
        got = data.tables[name]
        assert got.height == frame.height, name
        assert (got["as_of"] == AS_OF).all(), name
    assert data.tables["quarantine"].height == world.quarantine.height
    assert sorted(data.tables["runs"]["status"].to_list()) == ["failed", "succeeded"]
    assert data.deal_info is not None and "amount" in data.deal_info.columns


def test_behaviour_map_comes_from_the_latest_training_before_as_of(
    warehouse_settings: Settings, gathered: ReportData
) -> None:
    data = gathered
    behavior = data.tables["behavior_value"]
    assert behavior.height > 0 and (behavior["as_of"] == BEHAVIOR_AS_OF).all()
    assert f"{BEHAVIOR_AS_OF:%Y-%m-%d %H:%M} UTC" in data.notes["behavior_value"]
    # before that training there is no map to show
    earlier = gather(warehouse_settings, BEHAVIOR_AS_OF - timedelta(hours=1), NO_CHARTS)
    assert earlier.table("behavior_value") is None


def test_calibration_uses_outcomes_known_at_as_of_only(
    warehouse_settings: Settings, gathered: ReportData, world: World
) -> None:
    data = gathered
    closed = world.deals.filter(pl.col("outcome").is_not_null())
    assert data.calibration is not None
    assert data.calibration.height == closed.height
    assert set(data.calibration["deal_id"]) == set(closed["deal_id"])
    assert (data.calibration["scored_as_of"] == PAST_AS_OF).all()
    # ten days earlier, deals that closed in the last ten days are still open: not counted
    cut = AS_OF - timedelta(days=10)
    earlier = gather(warehouse_settings, cut, NO_CHARTS)
    known = closed.filter(pl.col("closed_at") <= cut)
    assert earlier.calibration is not None
    assert set(earlier.calibration["deal_id"]) == set(known["deal_id"])
    assert 0 < earlier.calibration.height < data.calibration.height
    won = dict(zip(closed["deal_id"], closed["outcome"] == "won", strict=True))
    assert all(won[d] == w for d, w in earlier.calibration.select("deal_id", "won").rows())


def test_actuals_cover_history_and_forecast_window(gathered: ReportData) -> None:
    data = gathered
    actuals = data.actuals
    assert actuals is not None
    assert actuals.select("customer_id", "sku").n_unique() == data.options.demand_series
    before = actuals.filter(~pl.col("after_as_of"))
    after = actuals.filter(pl.col("after_as_of"))
    assert before["bucket_start"].min() == AS_OF - timedelta(days=data.options.history_days)
    assert before["bucket_start"].max() == AS_OF - timedelta(hours=4)
    assert after["bucket_start"].min() == AS_OF
    assert after["quantity"].sum() > 0  # the source holds sales after as_of (display only)


def test_other_as_of_names_the_latest_one(warehouse_settings: Settings) -> None:
    later = AS_OF + timedelta(days=1)
    data = gather(warehouse_settings, later, NO_CHARTS)
    assert data.table("deal_scores") is None
    note = data.notes["deal_scores"]
    assert "salesml score deals --as-of" in note and AS_OF.isoformat() in note


def test_empty_warehouse_gives_a_report_with_notes(
    empty_settings: Settings, tmp_path: Path
) -> None:
    data = gather(empty_settings, AS_OF)
    assert data.tables == {}
    assert data.notes["deal_scores"].startswith("no data: run `salesml score deals`")
    assert data.calibration is None and data.actuals is None
    path = build(empty_settings, AS_OF, out_path=tmp_path / "sub" / "report.html")
    page = path.read_text(encoding="utf-8")
    assert "no data: run <code>salesml score deals</code>" in page
    assert "no data: run <code>salesml forecast demand</code>" in page
    assert not list(path.parent.glob("*.partial"))


def test_unreadable_sales_become_a_note(warehouse_settings: Settings, tmp_path: Path) -> None:
    broken = warehouse_settings.model_copy(
        update={"sources": warehouse_settings.sources.model_copy(update={"path": tmp_path})}
    )
    data = gather(broken, AS_OF, NO_CHARTS)
    assert data.actuals is None
    assert data.notes["actuals"].startswith("actual sales not shown: sales could not be read")
    assert data.calibration is None
    assert "deals could not be read" in data.notes["calibration"]


def test_default_path_is_beside_the_duckdb_warehouse(empty_settings: Settings) -> None:
    path = default_path(empty_settings, AS_OF)
    db = Path(empty_settings.warehouse.url.removeprefix("duckdb:///"))
    assert path == db.parent / "report-2025-07-01T0000Z.html"


def test_runs_without_quarantine_table_mean_nothing_was_quarantined(
    empty_settings: Settings, tmp_path: Path
) -> None:
    from salesml.warehouse import Warehouse

    wh = Warehouse.from_settings(empty_settings)
    wh.finish_run(wh.start_run(flow="validate", as_of=AS_OF), "succeeded", row_counts={})
    data = gather(empty_settings, AS_OF, NO_CHARTS)
    assert data.tables["quarantine"].height == 0
    assert "quarantine" not in data.notes
    page = build(empty_settings, AS_OF, out_path=tmp_path / "r.html").read_text()
    assert "No row was quarantined for this as_of." in page


def test_demand_only_warehouse_gives_a_report_without_deal_sections(
    world: World, tmp_path: Path
) -> None:
    """A shop with sales and no CRM: no deals input, no deal tables; the page has no deal
    section, no deal link and no note asking for `salesml score deals`."""
    from salesml.report.render import render
    from salesml.warehouse import Warehouse
    from tests.report.synthetic import settings_for

    settings = settings_for(tmp_path)
    (tmp_path / "data").mkdir()
    world.sales.write_parquet(tmp_path / "data" / "sales.parquet")
    demand = {
        name: frame
        for name, frame in world.outputs[AS_OF].items()
        if name in ("demand_forecast", "demand_forecast_factors", "sku_health")
    }
    wh = Warehouse.from_settings(settings)
    run_id = wh.start_run(flow="forecast_demand", as_of=AS_OF)
    counts = wh.write_batch(demand, as_of=AS_OF, run_id=run_id, model_version="1")
    wh.finish_run(run_id, "succeeded", model_version="1", row_counts=counts)
    # a table that exists but never had a row (a map with no activities) counts as absent
    empty = {"behavior_value": world.outputs[BEHAVIOR_AS_OF]["behavior_value"].clear()}
    wh.write_batch(empty, as_of=AS_OF, run_id=run_id, model_version="1")
    assert "behavior_value" in wh.tables()
    data = gather(settings, AS_OF, NO_CHARTS)
    assert "deal_scores" not in data.tables and data.deal_gate is None
    assert "behavior_value" not in data.tables
    page = render(data)
    assert '<section id="demand">' in page and '<section id="quality">' in page
    for absent in ('id="deals"', 'id="behaviour"', 'id="pipeline"', "salesml score deals"):
        assert absent not in page
