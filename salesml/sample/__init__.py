"""Synthetic sample worlds with planted, documented effects (see README.md in this folder).

`deals_world` builds a CRM (deals, stage history, close-date changes, activities, accounts)
whose outcomes follow known activity x contact-role effects with a 72 h decay, stage dwell
penalties, slips, rep skill, industry and amount; `demand_world` builds store x SKU sales
transactions with hour-of-day / weekday profiles, closed hours, holidays, price and promotion
signals (planned ahead), trends, long-tail SKUs, returns and stock-outs that censor sales.
Both are seeded and vectorised; `write_sample` writes them as Parquet, chunk by chunk.
"""

from salesml.sample._common import WORLD_END
from salesml.sample.deals import PLANTED_ACTIVITY_EFFECTS, deal_chunks, deals_world
from salesml.sample.demand import HOLIDAYS, demand_chunks, demand_world
from salesml.sample.write import planted_effects, write_sample

__all__ = [
    "HOLIDAYS",
    "PLANTED_ACTIVITY_EFFECTS",
    "WORLD_END",
    "deal_chunks",
    "deals_world",
    "demand_chunks",
    "demand_world",
    "planted_effects",
    "write_sample",
]
