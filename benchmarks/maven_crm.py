"""Map the Maven CRM export (`../shared/datasets/maven_crm/`, read in place) to a salesml source.

    .venv/bin/python benchmarks/maven_crm.py --out /tmp/maven   # writes /tmp/maven/{data,salesml.yaml}

The files stay as close to the export as they can: columns keep their Maven names and the
written config's `column_map` renames them (as a user would), so the script only does what a
rename cannot. Every such decision is printed and listed here:

- `sales_pipeline.csv` -> `deals.csv`. `opportunity_id` -> deal_id, `sales_agent` -> owner_id,
  `account` -> account_id, `engage_date` -> created_at, `close_date` -> closed_at,
  `deal_stage` -> outcome (Won / Lost; `Engaging` is open, so the cell is left empty).
- The 500 `Prospecting` opportunities have no date at all (no engage date, no close date): a
  deal must have a creation time to exist point in time, so they are left out (counted).
- Of the 1,425 opportunities without an account, the 1,088 with a date get the explicit
  account `(no account)` (with an accounts row whose attributes are empty), so they are scored
  and their missing account is a visible value, not a dropped row (the other 337 are
  prospecting rows, left out above).
- `close_value` is known only after the outcome (0 when lost): it is dropped, never a feature.
- amount = the product's list price from `products.csv` (`sales_price`); the pipeline's
  `GTXPro` is the products file's `GTX Pro`. The product `series` is kept as an extra column.
- region = the agent's `regional_office` from `sales_teams.csv`; `manager` is kept as an extra.
- `accounts.csv`: `account` -> account_id, `sector` -> industry (`technolgy` -> `technology`),
  `revenue` -> annual_revenue (millions of USD), `employees`; `year_established`,
  `office_location`, `subsidiary_of` kept as extra columns.
- No activity log, no stage history: none is invented (no dummy activity).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import polars as pl

MAVEN = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "maven_crm"
NO_ACCOUNT = "(no account)"
PRODUCT_FIXES = {"GTXPro": "GTX Pro"}
SECTOR_FIXES = {"technolgy": "technology"}

COLUMN_MAP: dict[str, dict[str, str | list[str]]] = {
    "deals": {
        "opportunity_id": "deal_id",
        "sales_agent": "owner_id",
        "account": "account_id",
        "engage_date": "created_at",
        "close_date": "closed_at",
        "deal_stage": "outcome",
        "regional_office": "region",
        "list_price": "amount",
    },
    "accounts": {"account": "account_id", "sector": "industry", "revenue": "annual_revenue"},
}


def map_deals(source: Path) -> tuple[pl.DataFrame, dict[str, int]]:
    """The pipeline as a deals export (Maven column names), and the counts of each decision."""
    pipeline = pl.read_csv(source / "sales_pipeline.csv", infer_schema=False)
    products = pl.read_csv(source / "products.csv", infer_schema=False)
    teams = pl.read_csv(source / "sales_teams.csv", infer_schema=False)
    no_date = pipeline.filter(pl.col("engage_date").is_null())
    deals = (
        pipeline.filter(pl.col("engage_date").is_not_null())
        .with_columns(
            pl.col("product").replace(PRODUCT_FIXES),
            pl.col("account").fill_null(NO_ACCOUNT),
            pl.when(pl.col("deal_stage").is_in(["Won", "Lost"])).then(pl.col("deal_stage")),
        )
        .join(
            products.select(
                "product", "series", pl.col("sales_price").cast(pl.Float64).alias("list_price")
            ),
            on="product",
            how="left",
        )
        .join(teams, on="sales_agent", how="left")
        .drop("close_value")
    )
    counts = {
        "opportunities": pipeline.height,
        "left out: no date (prospecting)": no_date.height,
        "deals written": deals.height,
        "opportunities without an account": pipeline.filter(pl.col("account").is_null()).height,
        f"account filled with '{NO_ACCOUNT}'": pipeline.filter(
            pl.col("account").is_null() & pl.col("engage_date").is_not_null()
        ).height,
        "product renamed (GTXPro -> GTX Pro)": pipeline.filter(
            pl.col("product").is_in(list(PRODUCT_FIXES))
        ).height,
        "without a list price": deals.filter(pl.col("list_price").is_null()).height,
        "without a region": deals.filter(pl.col("regional_office").is_null()).height,
        "won": deals.filter(pl.col("deal_stage") == "Won").height,
        "lost": deals.filter(pl.col("deal_stage") == "Lost").height,
        "open (engaging)": deals.filter(pl.col("deal_stage").is_null()).height,
    }
    return deals, counts


def map_accounts(source: Path) -> pl.DataFrame:
    """The accounts export plus the explicit `(no account)` row (all attributes empty)."""
    accounts = pl.read_csv(source / "accounts.csv", infer_schema=False).with_columns(
        pl.col("sector").replace(SECTOR_FIXES)
    )
    blank = pl.DataFrame({"account": [NO_ACCOUNT]}).with_columns(
        pl.lit(None, dtype=pl.String).alias(c) for c in accounts.columns if c != "account"
    )
    return pl.concat([accounts, blank.select(accounts.columns)])


def config_text(data: Path, out: Path, deal_settings: dict[str, Any] | None = None) -> str:
    """A salesml config for the mapped folder; the column_map does the renaming.
    `deal_settings`: more `deals:` settings (e.g. label_horizon_days)."""
    import yaml

    config = {
        "sources": {"path": str(data)},
        "warehouse": {"url": f"duckdb:///{out / 'warehouse.duckdb'}"},
        "mlflow": {"tracking_uri": f"sqlite:///{out / 'mlflow.db'}"},
        "timezone": "UTC",
        "column_map": COLUMN_MAP,
        "deals": {"custom_features": ["manager", "series"], **(deal_settings or {})},
    }
    return yaml.safe_dump(config, sort_keys=False)


def write(
    out: Path, source: Path = MAVEN, deal_settings: dict[str, Any] | None = None
) -> tuple[Path, dict[str, int]]:
    """Write `out/data/{deals,accounts}.csv` and `out/salesml.yaml`; return the config path."""
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    deals, counts = map_deals(source)
    deals.write_csv(data / "deals.csv")
    map_accounts(source).write_csv(data / "accounts.csv")
    config = out / "salesml.yaml"
    config.write_text(config_text(data.resolve(), out.resolve(), deal_settings))
    return config, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--source", type=Path, default=MAVEN, help="the Maven CRM folder")
    args = parser.parse_args()
    config, counts = write(args.out, args.source)
    for what, n in counts.items():
        print(f"{what}: {n:,}")
    print(f"config: {config}")


if __name__ == "__main__":
    main()
