"""Adapter: the real pizza-shop dataset (one year of orders) -> the canonical `sales` table.

The dataset lives outside the project (`../shared/datasets/pizza` beside the repository) and is
read in place, never copied. Orders carry a local date and time without a zone: they are wall
time in `timezone` (the shop's; use the config's), converted to UTC like any naive input.
One customer ("shop"), one SKU per pizza_id (91), quantity per order line, unit_price = the
menu price of that pizza.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from salesml.timeutil import DATETIME, to_utc

SHOP = "shop"
FILES = ("orders.csv", "order_details.csv", "pizzas.csv")


def default_path(repo_root: Path | None = None) -> Path:
    """`../shared/datasets/pizza` relative to the repository root."""
    root = repo_root or Path(__file__).resolve().parents[2]
    return root.parent / "shared" / "datasets" / "pizza"


def available(path: Path | None = None) -> bool:
    """Whether the dataset's three CSV files are in `path` (default: `default_path()`)."""
    folder = path or default_path()
    return all((folder / name).is_file() for name in FILES)


def load_sales(path: Path | None = None, timezone: str = "UTC") -> pl.DataFrame:
    """Canonical sales (ts UTC, customer_id, sku, quantity, unit_price, region) of the shop."""
    folder = path or default_path()
    orders = pl.scan_csv(folder / "orders.csv", schema_overrides={"date": pl.String})
    lines = pl.scan_csv(folder / "order_details.csv")
    pizzas = pl.scan_csv(folder / "pizzas.csv").select("pizza_id", "price")
    local = pl.concat_str(pl.col("date"), pl.lit(" "), pl.col("time")).str.to_datetime(
        "%Y-%m-%d %H:%M:%S", time_unit="us"
    )
    return (
        lines.join(orders, on="order_id", how="inner")
        .join(pizzas, on="pizza_id", how="left")
        .select(
            to_utc(local, timezone).cast(DATETIME).alias("ts"),
            pl.lit(SHOP).alias("customer_id"),
            pl.col("pizza_id").alias("sku"),
            pl.col("quantity").cast(pl.Float64),
            pl.col("price").cast(pl.Float64).alias("unit_price"),
            pl.lit(None, dtype=pl.String).alias("region"),
        )
        .sort("ts", "sku")
        .collect()
    )
