"""What-if scenarios: `salesml forecast demand --scenario NAME --set SIGNAL[@REGION]=WEIGHT`.

Issue 10, "Done means": scenario rows never touch baseline rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from salesml.config import Settings
from salesml.demand import adjust, demand_jobs
from salesml.warehouse import Warehouse
from tests.clihelp import assert_one_line_or_ok, run_cli
from tests.demand.test_demand_jobs import AS_OF, _settings

LINEAGE = ["run_id"]  # stamped per run; everything else of a baseline row must not move


def _forecast_rows(settings: Settings, scenario: str) -> pl.DataFrame:
    rows = Warehouse.from_settings(settings).read("demand_forecast", as_of=AS_OF)
    return rows.filter(pl.col("scenario") == scenario)


def test_scenario_rows_sit_next_to_the_baseline_and_never_touch_it(
    mlflow_settings: Settings, tmp_path: Path
) -> None:
    settings = _settings(mlflow_settings, tmp_path / "src")
    demand_jobs.train(settings, AS_OF)
    base = demand_jobs.forecast(settings, AS_OF)
    assert base.scenario == adjust.BASELINE
    wh = Warehouse.from_settings(settings)
    before = {t: wh.read(t, as_of=AS_OF) for t in ("demand_forecast", "sku_health")}
    baseline = _forecast_rows(settings, "baseline")
    assert baseline.height == before["demand_forecast"].height > 0

    push = adjust.scenario("push", ["promotion=2", "price@nowhere=0.5"], settings.demand)
    first = demand_jobs.forecast(settings, AS_OF, scenario=push)
    assert first.rows_written == {"demand_forecast": baseline.height}
    promo = next(a for a in first.adjustments if a["signal"] == "promotion")
    assert promo["cells"] > 0 and promo["units_added"] > 0  # the sample world has promotions
    nowhere = next(a for a in first.adjustments if a["region"] == "nowhere")
    assert nowhere["cells"] == 0
    assert any(n.startswith("signal weight promotion@* x2") for n in first.notes)
    scenario_rows = _forecast_rows(settings, "push")
    again = demand_jobs.forecast(settings, AS_OF, scenario=push)  # idempotent
    assert again.rows_written == first.rows_written
    assert_frame_equal(_forecast_rows(settings, "push").drop(LINEAGE), scenario_rows.drop(LINEAGE))
    demand_jobs.forecast(
        settings, AS_OF, scenario=adjust.scenario("cut", ["promotion=0.5"], settings.demand)
    )

    # baseline rows byte for byte; sku_health untouched (a scenario writes forecast rows only)
    assert_frame_equal(_forecast_rows(settings, "baseline"), baseline)
    assert_frame_equal(wh.read("sku_health", as_of=AS_OF), before["sku_health"])
    # the second scenario kept the first; expected moved by exactly the weight where it acted
    pair = baseline.join(scenario_rows, on=["customer_id", "sku", "bucket_start"], suffix="_s")
    ratio = pair.filter(pl.col("expected") > 0).select(pl.col("expected_s") / pl.col("expected"))
    assert set(ratio.to_series().round(9).unique()) == {1.0, 2.0}
    assert _forecast_rows(settings, "cut").height == baseline.height
    # a baseline re-run replaces the baseline only
    demand_jobs.forecast(settings, AS_OF)
    counts = dict(wh.read("demand_forecast", as_of=AS_OF)["scenario"].value_counts().iter_rows())
    assert counts == {"baseline": baseline.height, "push": baseline.height, "cut": baseline.height}
    runs = wh.read("runs").filter(pl.col("flow") == "forecast_demand")
    params = [json.loads(p) for p in runs["params"]]
    weights_of = {p.get("scenario", "baseline"): p["signal_weights"] for p in params}
    assert weights_of == {"baseline": {}, "push": push.weights, "cut": {"promotion": {"*": 0.5}}}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--scenario", "s", "--set", "promo=2"], "unknown signal 'promo'"),
        (["--scenario", "s", "--set", "promotion=x"], "weight 'x' is not a number"),
        (["--set", "promotion=2"], "--set needs --scenario NAME"),
    ],
)
def test_bad_what_if_options_fail_in_one_line(
    settings: Settings, tmp_path: Path, args: list[str], expected: str
) -> None:
    config = tmp_path / "salesml.yaml"
    config.write_text(json.dumps({"warehouse": {"url": settings.warehouse.url}}))
    result = run_cli(["forecast", "demand", "--config", str(config), *args])
    line = assert_one_line_or_ok(result)
    assert line is not None and expected in line and result.exit_code == 2


def test_the_forecast_flow_passes_the_scenario_through(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines import flows

    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def fake_forecast(*args: Any, **kwargs: Any) -> None:
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(demand_jobs, "forecast", fake_forecast)
    monkeypatch.setattr(flows, "log_progress", lambda: None)  # needs a flow run context
    config = tmp_path / "salesml.yaml"
    config.write_text(json.dumps({"warehouse": {"url": settings.warehouse.url}}))
    with pytest.raises(Stop):
        flows.forecast_demand.fn(
            config=str(config), as_of="2025-06-01T00:00:00+00:00", scenario="s",
            weights=["promotion@north=1.5"],
        )  # fmt: skip
    assert seen["scenario"] == adjust.Scenario("s", {"promotion": {"north": 1.5}})


def test_the_report_reads_the_baseline_only() -> None:
    from salesml.report.gather import _baseline_only

    frame = pl.DataFrame({"scenario": ["baseline", "push", None], "p50": [1.0, 2.0, 3.0]})
    assert _baseline_only(frame)["p50"].to_list() == [1.0, 3.0]  # null: written before scenarios
    assert _baseline_only(frame, "push")["p50"].to_list() == [2.0]
