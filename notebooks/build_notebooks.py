"""Write the notebooks from the cell sources below (outputs stripped, so git diffs stay small).

Run `python notebooks/build_notebooks.py` after editing a cell here; CI executes the .ipynb files.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

SETUP = """\
import os
import tempfile
from pathlib import Path

from salesml.config import from_dict
from salesml.sample import HOLIDAYS, WORLD_END, write_sample

# Everything this notebook writes goes to a fresh folder (set SALESML_NOTEBOOK_DIR to keep it).
workdir = Path(os.environ.get("SALESML_NOTEBOOK_DIR") or tempfile.mkdtemp(prefix="salesml-nb-"))
settings = from_dict({
    "sources": {"path": str(workdir / "data")},
    "warehouse": {"url": f"duckdb:///{workdir / 'warehouse.duckdb'}"},
    "mlflow": {"tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}"},
    "timezone": "UTC",
    "demand": {"holidays": [d.isoformat() for d in sorted(HOLIDAYS)]},
})
as_of = WORLD_END
workdir"""

QUICKSTART = [
    (
        "markdown",
        "# salesml quickstart: from a sample world to scores in a few cells\n\n"
        "The same library calls the `salesml` command line and the Prefect flows make.",
    ),
    ("code", SETUP),
    ("markdown", "## 1. A synthetic world in the canonical tables (SPEC.md)"),
    (
        "code",
        "paths = write_sample(workdir / 'data', deals=2000, series=30, days=90, seed=0)\n"
        "sorted(p.name for p in paths.values())",
    ),
    ("markdown", "## 2. Validate: bad rows go to `quarantine` with a reason"),
    ("code", "from salesml.validate_job import validate_inputs\n\nvalidate_inputs(settings, as_of)"),
    ("markdown", "## 3. Train the deal-win model and score the open deals"),
    (
        "code",
        "from salesml.deals import deal_win_jobs as deal_jobs\n\n"
        "trained = deal_jobs.train(settings, as_of)\nprint(trained.describe())\n"
        "scored = deal_jobs.score(settings, as_of)\nprint(scored.describe())",
    ),
    (
        "code",
        "from salesml.warehouse import Warehouse\n\nwarehouse = Warehouse.from_settings(settings)\n"
        "scores = warehouse.read('deal_scores', as_of=as_of)\n"
        "scores.sort('win_probability').select('deal_id', 'win_probability', 'health', 'health_reasons', 'top_factors').head(5)",
    ),
    ("markdown", "## 4. Forecast demand per 4-hour bucket"),
    (
        "code",
        "from salesml.demand import demand_jobs\n\n"
        "print(demand_jobs.train(settings, as_of).describe())\n"
        "print(demand_jobs.forecast(settings, as_of).describe())\n"
        "warehouse.read('demand_forecast', as_of=as_of).head(6)",
    ),
    ("markdown", "## 5. The analyst report (one self-contained HTML file)"),
    (
        "code",
        "from salesml.report import build\n\nreport_path = build(settings, as_of, workdir / 'report.html')\n"
        "report_path, report_path.stat().st_size",
    ),
]

DEAL_WIN = [
    (
        "markdown",
        "# Deal-win model: features, backtest, calibration, explanations, behaviour value\n\n"
        "Everything is point in time: features, labels and encoders use only rows known at `as_of`.",
    ),
    ("code", SETUP),
    (
        "code",
        "from salesml.inputs import load_tables\n\n"
        "write_sample(workdir / 'data', deals=2500, series=0, days=30, seed=1)\n"
        "tables, quarantine = load_tables(settings, as_of, ['deals', 'deal_stage_history', "
        "'deal_close_date_history', 'activities', 'accounts'])\n"
        "{name: frame.height for name, frame in tables.items()}, quarantine.height",
    ),
    (
        "markdown",
        "## Training snapshots and point-in-time features\n\n"
        "Each deal contributes a snapshot every `deals.snapshot_every_days` while it was open, "
        "labelled with its outcome; deals still open at `as_of` have no label yet and are left out "
        "of training (they are what we score).",
    ),
    (
        "code",
        "from salesml.deals.features import build_features, learn_spec\n"
        "from salesml.deals.snapshots import training_snapshots\n\n"
        "snapshots = training_snapshots(tables['deals'], as_of, every_days=settings.deals.snapshot_every_days)\n"
        "spec = learn_spec(tables, as_of, settings.deals)\n"
        "features = build_features(snapshots.head(2000), tables, spec)\n"
        "print(snapshots.height, 'snapshots;', len(spec.feature_names()), 'features')\n"
        "features.head(3)",
    ),
    ("markdown", "## Rolling-origin backtest next to the baselines"),
    (
        "code",
        "from salesml.deals import deal_win_jobs as deal_jobs\n\n"
        "result = deal_jobs.backtest(settings, as_of, n_origins=3)\n"
        "{k: v for k, v in result.items() if k != 'per_origin'}",
    ),
    ("markdown", "## Train, log to MLflow, promote, and score with reasons"),
    (
        "code",
        "trained = deal_jobs.train(settings, as_of)\nprint(trained.describe())\n"
        "print(deal_jobs.score(settings, as_of).describe())",
    ),
    (
        "code",
        "from salesml.warehouse import Warehouse\n\nwarehouse = Warehouse.from_settings(settings)\n"
        "factors = warehouse.read('deal_score_factors', as_of=as_of)\n"
        "worst = warehouse.read('deal_scores', as_of=as_of).drop_nulls('win_probability').sort('win_probability').head(1)\n"
        "factors.join(worst.select('deal_id'), on='deal_id').sort('rank')",
    ),
    ("markdown", "## Behaviour value: which actions with which roles move the win probability"),
    (
        "code",
        "warehouse.read('behavior_value', as_of=as_of).sort('mean_contribution', descending=True).head(10)",
    ),
    ("markdown", "## Pipeline revenue forecast"),
    ("code", "warehouse.read('pipeline_forecast', as_of=as_of).head(10)"),
]

DEMAND = [
    ("markdown", "# 4-hour demand: buckets, backtest vs baselines, intervals, drivers, SKU health"),
    ("code", SETUP),
    (
        "code",
        "from salesml.inputs import load_tables\n\n"
        "write_sample(workdir / 'data', deals=0, series=40, days=90, seed=2)\n"
        "tables, _ = load_tables(settings, as_of, ['sales', 'signals', 'inventory'])\n"
        "tables['sales'].head(5)",
    ),
    ("markdown", "## 4-hour buckets aligned to midnight in the configured timezone"),
    (
        "code",
        "from salesml.demand.buckets import bucket_sales, origin_bucket\n\n"
        "origin = origin_bucket(as_of, settings.timezone, settings.demand.grid.bucket_hours)\n"
        "bucketed = bucket_sales(tables['sales'], settings.demand, settings.timezone, origin).collect()\n"
        "bucketed.head(6)",
    ),
    (
        "markdown",
        "## Rolling-origin backtest next to seasonal naive, recent same-bucket mean and ETS",
    ),
    (
        "code",
        "from salesml.demand import demand_jobs\n\n"
        "result = demand_jobs.backtest(settings, as_of, n_origins=2)\n"
        "{k: v for k, v in result.items() if k != 'per_origin'}",
    ),
    ("markdown", "## Train, forecast with P10/P50/P90, drivers, SKU health"),
    (
        "code",
        "print(demand_jobs.train(settings, as_of).describe())\n"
        "print(demand_jobs.forecast(settings, as_of).describe())",
    ),
    (
        "code",
        "from salesml.warehouse import Warehouse\n\nwarehouse = Warehouse.from_settings(settings)\n"
        "forecast = warehouse.read('demand_forecast', as_of=as_of)\n"
        "forecast.select('customer_id', 'sku', 'bucket_start', 'horizon', 'p10', 'p50', 'p90').head(8)",
    ),
    ("code", "warehouse.read('demand_forecast_factors', as_of=as_of).head(8)"),
    ("code", "warehouse.read('sku_health', as_of=as_of).sort('health').head(8)"),
]


def write(name: str, cells: list[tuple[str, str]]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_markdown_cell(src) if kind == "markdown" else nbformat.v4.new_code_cell(src)
        for kind, src in cells
    ]
    for number, cell in enumerate(nb.cells):
        cell["id"] = f"{Path(name).stem}-{number:02d}"  # stable ids: no churn when rebuilt
    nbformat.write(nb, HERE / name)


if __name__ == "__main__":
    write("01_quickstart.ipynb", QUICKSTART)
    write("02_deal_win.ipynb", DEAL_WIN)
    write("03_demand_4h.ipynb", DEMAND)
