"""The pizza-shop adapter reads the real dataset in place (skipped where it is absent)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from salesml.demand import pizza
from salesml.timeutil import DATETIME

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = pizza.default_path(REPO_ROOT)

pytestmark = pytest.mark.skipif(not pizza.available(DATA), reason="../shared/datasets/pizza absent")


def test_pizza_orders_become_canonical_sales_in_local_time() -> None:
    sales = pizza.load_sales(DATA, timezone="America/New_York")
    assert sales.schema["ts"] == DATETIME
    assert sales.columns == ["ts", "customer_id", "sku", "quantity", "unit_price", "region"]
    assert sales["sku"].n_unique() == 91
    assert sales["customer_id"].unique().to_list() == [pizza.SHOP]
    assert sales["quantity"].sum() == pytest.approx(49_574)
    assert sales["unit_price"].null_count() == 0
    # the first order (2015-01-01 11:38:36 local, EST) is 16:38:36 UTC
    first = sales.sort("ts").row(0, named=True)
    assert first["ts"].isoformat() == "2015-01-01T16:38:36+00:00"
    local_hours = sales.select(pl.col("ts").dt.convert_time_zone("America/New_York").dt.hour())
    assert local_hours["ts"].to_list()[0] is not None
    assert set(local_hours["ts"].unique().to_list()) <= set(range(9, 24))
