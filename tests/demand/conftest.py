"""Small demand fixtures: hand-made sales frames and a tiny, fast model configuration."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from salesml.config import DemandSettings, Settings
from salesml.timeutil import DATETIME
from tests.fast_models import FAST_DEMAND, merged

SALES_SCHEMA: dict[str, pl.DataType] = {
    "ts": DATETIME,
    "customer_id": pl.String(),
    "sku": pl.String(),
    "quantity": pl.Float64(),
    "unit_price": pl.Float64(),
    "region": pl.String(),
}


def sales_frame(rows: Sequence[tuple[datetime, str, str, float]]) -> pl.DataFrame:
    """Canonical sales from (ts, customer_id, sku, quantity) tuples (price 1.0, no region)."""
    return pl.DataFrame(
        [(ts.astimezone(UTC), c, s, q, 1.0, None) for ts, c, s, q in rows],
        schema=SALES_SCHEMA,
        orient="row",
    )


def tiny_demand(**overrides: object) -> DemandSettings:
    """A lean model so tests fit in about a second.

    Overrides use the nested keys; a sub-section (`model={...}`) merges into the lean one.
    """
    return DemandSettings.model_validate(merged(FAST_DEMAND, overrides))


@pytest.fixture
def tiny_settings() -> Settings:
    return Settings(demand=tiny_demand())


def daily_pattern_sales(
    start: datetime, days: int, customers: Sequence[str] = ("c1",), skus: Sequence[str] = ("a",)
) -> pl.DataFrame:
    """A deterministic shop: sales at 10:00 and 14:00 UTC every day, more on Fridays."""
    rows = []
    for d in range(days):
        day = start + timedelta(days=d)
        for c in customers:
            for i, s in enumerate(skus):
                qty = 1.0 + i + (2.0 if day.weekday() == 4 else 0.0)
                rows.append((day.replace(hour=10), c, s, qty))
                rows.append((day.replace(hour=14), c, s, 1.0))
    return sales_frame(rows)
