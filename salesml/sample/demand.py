"""The synthetic retail world: sales transactions, price / promotion signals, daily inventory.

Seeded and vectorised (numpy draws, polars frames; loops only over days of the stock simulation,
each step vectorised over all series of a chunk). Series are generated in chunks of
`CHUNK_SERIES`, so 100,000 series fit in bounded memory.

Planted, documented effects (the truth is in the returned per-series frame and the constants):
- Stores (customer_id) x SKUs. Each store has a type with opening hours (`STORE_HOURS`): a
  standard store sells only 08:00-20:00 UTC, so its 4-hour buckets 00-04, 04-08 and 20-24 are
  ALWAYS zero (`closed_buckets` in the truth); `SUNDAY_CLOSED_SHARE` of stores never sell on
  Sundays (`closed_weekdays`). Within open hours sales follow a midday + late-afternoon profile.
- Weekday factors (`WEEKDAY_FACTORS`, Monday first) and holidays (`HOLIDAYS`, a fixed list of
  dates with demand multipliers: Christmas and Easter Sunday 0, Black Friday 2.0, ...).
- Demand (transactions per day) = base rate x exp(trend x (day - mid) / 30) x weekday x holiday
  x promotion lift (when a promotion runs) x (price / base price) ** elasticity.
  Base rates: `LONG_TAIL_SKU_SHARE` of SKUs are intermittent long-tail items (~0.1 sales a day,
  mostly zero buckets); trends ~ N(0, `TREND_SD_PER_30_DAYS`) log-growth per 30 days;
  elasticity per SKU uniform in `ELASTICITY_RANGE`; promotion lift per series log-normal
  around `PROMO_LIFT_MEDIAN`. Quantity per transaction is geometric with a per-series mean.
- `signals` rows, known in advance (the plan exists `SIGNAL_HORIZON_DAYS` beyond `end`):
  "price" (scope: sku; the shelf price) and "promotion" (0/1; scope: sku for chain-wide
  promotions, customer_id + sku for store promotions). Step semantics: a row holds the value
  from its ts until the next row of the same name and scope; every scope has a row at the
  window start. Changes happen at 00:00 UTC. Columns region / unused scope are null.
- Returns: `RETURN_SHARE` of transactions have negative quantity (never censored).
- Stock-outs censor sales: `inventory` has one on_hand snapshot per series at 00:00 UTC each
  day (after the morning delivery). Stores restock weekly up to an order-up-to level; a
  delivery fails with probability `DELIVERY_FAIL_PROB`. Purchases are served in time order
  while stock lasts: when on_hand is 0 no positive sale happens that day, even if demand > 0
  (the lost units are `censored_units` in the truth).
- `unit_price` on each sale is the shelf price of its day (`NULL_PRICE_SHARE` left null).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import polars as pl

from salesml.progress import Progress, report
from salesml.sample._common import (
    STREAM_DEMAND_CHUNK,
    STREAM_DEMAND_GLOBALS,
    US_PER_DAY,
    US_PER_SECOND,
    WORLD_END,
    check_end,
    draw_from_weights,
    epoch_us,
    labels,
    make_ids,
    midnight_before,
    rng_for,
    us_to_datetime,
)
from salesml.sample.deals import REGION_WEIGHTS, REGIONS

US_PER_HOUR = 3600 * US_PER_SECOND
BUCKET_HOURS = 4
STORE_TYPES: tuple[str, ...] = ("standard", "extended", "short", "always_open")
STORE_HOURS: dict[str, tuple[int, int]] = {
    "standard": (8, 20),
    "extended": (7, 22),
    "short": (9, 18),
    "always_open": (0, 24),
}
"""Opening hours [open, close) in UTC; no sale ever happens outside them."""
STORE_TYPE_WEIGHTS = (0.5, 0.25, 0.2, 0.05)
NIGHT_FACTOR = 0.08
"""Relative intensity of an always-open store at night (22:00-06:00)."""
SUNDAY_CLOSED_SHARE = 0.3
WEEKDAY_FACTORS: tuple[float, ...] = (0.9, 0.95, 1.0, 1.05, 1.2, 1.35, 0.8)
LONG_TAIL_SKU_SHARE = 0.35
LONG_TAIL_MEDIAN_RATE = 0.1
FAST_MEDIAN_RATE = 2.0
TREND_SD_PER_30_DAYS = 0.08
ELASTICITY_RANGE = (-2.5, -0.5)
PROMO_LIFT_MEDIAN = 1.8
PROMO_SERIES_SHARE = 0.4
PROMOS_PER_90_DAYS = 1.2
SKU_PROMO_SHARE = 0.25
SKU_PROMOS_PER_90_DAYS = 0.8
PROMO_DAYS = (3, 7)
PRICE_CHANGES_PER_90_DAYS = 1.5
PRICE_CHANGE_RANGE = (0.8, 1.15)
RETURN_SHARE = 0.02
NULL_PRICE_SHARE = 0.01
SIGNAL_HORIZON_DAYS = 7
DELIVERY_FAIL_PROB = 0.1
COVER_WEEKS_RANGE = (0.8, 2.2)
CHUNK_SERIES = 5_000
"""Series are generated in chunks of this size (bounded memory); part of the seed's meaning."""

DEMAND_TABLES: tuple[str, ...] = ("sales", "signals", "inventory")


def _easter(year: int) -> date:
    """Gregorian Easter Sunday (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month, day = divmod(h + l_ - 7 * m + 114, 31)
    return date(year, month, day + 1)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th given weekday (0 = Monday) of a month; n = -1 for the last one."""
    if n > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    last = date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _holiday_calendar(years: range) -> dict[date, tuple[str, float]]:
    calendar: dict[date, tuple[str, float]] = {}
    for y in years:
        easter = _easter(y)
        thanksgiving = _nth_weekday(y, 11, 3, 4)
        calendar |= {
            date(y, 1, 1): ("new_year", 0.3),
            date(y, 2, 14): ("valentines_day", 1.2),
            easter - timedelta(days=2): ("good_friday", 0.7),
            easter: ("easter_sunday", 0.0),
            easter + timedelta(days=1): ("easter_monday", 0.8),
            _nth_weekday(y, 5, 6, 2): ("mothers_day", 1.3),
            _nth_weekday(y, 5, 0, -1): ("memorial_day", 1.3),
            date(y, 7, 4): ("independence_day", 0.6),
            _nth_weekday(y, 9, 0, 1): ("labor_day", 1.2),
            date(y, 10, 31): ("halloween", 1.2),
            thanksgiving: ("thanksgiving", 0.4),
            thanksgiving + timedelta(days=1): ("black_friday", 2.0),
            date(y, 12, 24): ("christmas_eve", 1.5),
            date(y, 12, 25): ("christmas", 0.0),
            date(y, 12, 26): ("boxing_day", 1.3),
            date(y, 12, 31): ("new_years_eve", 1.3),
        }
    return calendar


HOLIDAY_CALENDAR: dict[date, tuple[str, float]] = _holiday_calendar(range(2020, 2031))
"""Date -> (name, demand multiplier) for 2020-2030; a multiplier of 0 closes every store."""
HOLIDAYS: dict[date, float] = {day: factor for day, (_, factor) in HOLIDAY_CALENDAR.items()}


def holidays_frame() -> pl.DataFrame:
    """The holiday list as a frame (date, name, multiplier), e.g. to join as a known signal."""
    days = sorted(HOLIDAY_CALENDAR)
    return pl.DataFrame(
        {
            "date": days,
            "name": [HOLIDAY_CALENDAR[d][0] for d in days],
            "multiplier": [HOLIDAY_CALENDAR[d][1] for d in days],
        }
    )


def hour_weights(store_type: str) -> np.ndarray:
    """Relative sales intensity per hour of day (24 values, zero outside opening hours)."""
    opens, closes = STORE_HOURS[store_type]
    mid = np.arange(24) + 0.5
    shape = 0.5 + np.exp(-((mid - 12.5) ** 2) / 4.0) + 1.2 * np.exp(-((mid - 17.5) ** 2) / 4.5)
    hours = np.arange(24)
    shape = np.where((hours >= opens) & (hours < closes), shape, 0.0)
    if store_type == "always_open":
        shape = np.where((hours < 6) | (hours >= 22), shape * NIGHT_FACTOR, shape)
    profile: np.ndarray = shape / shape.sum()
    return profile


def closed_buckets(store_type: str) -> list[int]:
    """Start hours of the 4-hour buckets in which a store of this type never sells."""
    weights = hour_weights(store_type).reshape(-1, BUCKET_HOURS).sum(axis=1)
    return [int(b * BUCKET_HOURS) for b in np.flatnonzero(weights == 0)]


@dataclass(frozen=True)
class _Grid:
    """The daily time grid: history days [0, n_days) and the signal plan [0, n_plan)."""

    day0_us: int
    end_us: int
    n_days: int
    n_plan: int
    weekday: np.ndarray  # of each plan day, 0 = Monday
    holiday: np.ndarray  # demand multiplier of each plan day


def _grid(end: datetime, days: int) -> _Grid:
    day_end = midnight_before(end)
    n_days = days + (1 if end > day_end else 0)
    day0 = day_end - timedelta(days=days)
    n_plan = n_days + SIGNAL_HORIZON_DAYS
    dates = [(day0 + timedelta(days=d)).date() for d in range(n_plan)]
    return _Grid(
        day0_us=epoch_us(day0),
        end_us=epoch_us(end),
        n_days=n_days,
        n_plan=n_plan,
        weekday=np.array([d.weekday() for d in dates]),
        holiday=np.array([HOLIDAYS.get(d, 1.0) for d in dates]),
    )


@dataclass(frozen=True)
class _Population:
    """Stores, SKUs, the series (store x SKU pairs) and the chain-wide plans."""

    customer_ids: pl.Series
    sku_ids: pl.Series
    series_customer: np.ndarray
    series_sku: np.ndarray
    store_type: np.ndarray
    sunday_closed: np.ndarray
    store_region: np.ndarray
    store_size: np.ndarray
    delivery_weekday: np.ndarray
    hour_cdf: np.ndarray  # stores x 24
    long_tail: np.ndarray
    sku_rate: np.ndarray
    base_price: np.ndarray
    elasticity: np.ndarray
    price: np.ndarray  # skus x plan days
    sku_promo: np.ndarray  # skus x plan days, bool


def _step_levels(
    rng: np.random.Generator, n_rows: int, n_plan: int, per_90_days: float
) -> np.ndarray:
    """Per row a step function over plan days: multipliers that change at random days."""
    counts = rng.poisson(per_90_days * n_plan / 90.0, n_rows)
    row = np.repeat(np.arange(n_rows), counts)
    day = rng.integers(1, max(n_plan, 2), len(row))
    level = rng.uniform(*PRICE_CHANGE_RANGE, len(row))
    event = np.full((n_rows, n_plan), -1, dtype=np.int64)
    order = np.lexsort((day, row))
    event[row[order], np.minimum(day[order], n_plan - 1)] = order
    # Forward-fill the latest event of each row (event ids are not monotone: use positions).
    position = np.where(event >= 0, np.arange(n_plan)[None, :], -1)
    last = np.maximum.accumulate(position, axis=1)
    filled = np.take_along_axis(event, np.maximum(last, 0), axis=1)
    with_base = np.append(level, 1.0)  # index len(level): no change yet, the base level
    return with_base[np.where(last >= 0, filled, len(level))]


def _promo_windows(
    rng: np.random.Generator, n_rows: int, n_plan: int, share: float, per_90_days: float
) -> np.ndarray:
    """Bool rows x plan days: promotion windows of PROMO_DAYS days for `share` of the rows."""
    eligible = rng.random(n_rows) < share
    counts = rng.poisson(per_90_days * n_plan / 90.0, n_rows) * eligible
    row = np.repeat(np.arange(n_rows), counts)
    start = rng.integers(0, n_plan, len(row))
    stop = np.minimum(start + rng.integers(PROMO_DAYS[0], PROMO_DAYS[1] + 1, len(row)), n_plan)
    delta = np.zeros((n_rows, n_plan + 1), dtype=np.int64)
    np.add.at(delta, (row, start), 1)
    np.add.at(delta, (row, stop), -1)
    return np.cumsum(delta[:, :-1], axis=1) > 0


def _population(n_series: int, seed: int, grid: _Grid) -> _Population:
    rng = rng_for(seed, STREAM_DEMAND_GLOBALS)
    n_customers = max(2, round(np.sqrt(n_series / 6)))
    n_skus = max(2, int(np.ceil(2 * n_series / n_customers)))
    pairs = np.sort(rng.choice(n_customers * n_skus, n_series, replace=False))
    store_type = draw_from_weights(rng, STORE_TYPE_WEIGHTS, n_customers)
    cdf_by_type = np.cumsum([hour_weights(t) for t in STORE_TYPES], axis=1)
    cdf_by_type[:, -1] = 1.0
    long_tail = rng.random(n_skus) < LONG_TAIL_SKU_SHARE
    median_rate = np.where(long_tail, LONG_TAIL_MEDIAN_RATE, FAST_MEDIAN_RATE)
    base_price = np.round(np.exp(rng.normal(np.log(8.0), 0.8, n_skus)), 2) + 0.49
    price = np.round(
        base_price[:, None] * _step_levels(rng, n_skus, grid.n_plan, PRICE_CHANGES_PER_90_DAYS), 2
    )
    return _Population(
        customer_ids=make_ids("STORE", np.arange(1, n_customers + 1), 5, "customer_id"),
        sku_ids=make_ids("SKU", np.arange(1, n_skus + 1), 6, "sku"),
        series_customer=pairs // n_skus,
        series_sku=pairs % n_skus,
        store_type=store_type,
        sunday_closed=rng.random(n_customers) < SUNDAY_CLOSED_SHARE,
        store_region=draw_from_weights(rng, REGION_WEIGHTS, n_customers),
        store_size=np.exp(rng.normal(0.0, 0.4, n_customers)),
        delivery_weekday=rng.integers(0, 6, n_customers),
        hour_cdf=cdf_by_type[store_type],
        long_tail=long_tail,
        sku_rate=median_rate * np.exp(rng.normal(0.0, 0.7, n_skus)),
        base_price=base_price,
        elasticity=rng.uniform(*ELASTICITY_RANGE, n_skus),
        price=price,
        sku_promo=_promo_windows(rng, n_skus, grid.n_plan, SKU_PROMO_SHARE, SKU_PROMOS_PER_90_DAYS),
    )


def _step_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, day) of the first plan day and of every day whose value differs from the day before."""
    change = np.ones_like(values, dtype=bool)
    change[:, 1:] = values[:, 1:] != values[:, :-1]
    row, day = np.nonzero(change)
    return row, day


def _signal_frame(
    grid: _Grid,
    name: str,
    day: np.ndarray,
    value: np.ndarray,
    sku: pl.Series,
    customer: pl.Series | None,
) -> pl.DataFrame:
    n = len(day)
    return pl.DataFrame(
        [
            us_to_datetime(grid.day0_us + day.astype(np.int64) * US_PER_DAY, "ts"),
            pl.Series("name", [name] * n, dtype=pl.String),
            pl.Series("value", value.astype(np.float64)),
            sku.alias("sku"),
            (customer if customer is not None else pl.Series([None] * n, dtype=pl.String)).alias(
                "customer_id"
            ),
            pl.Series("region", [None] * n, dtype=pl.String),
        ]
    )


def _chain_signals(population: _Population, grid: _Grid) -> pl.DataFrame:
    """Price rows (scope sku) and chain-wide promotion rows (scope sku), plan included."""
    price_row, price_day = _step_rows(population.price)
    promo_any = np.asarray(population.sku_promo.any(axis=1))
    promo_row, promo_day = _step_rows(population.sku_promo)
    keep = promo_any[promo_row]
    promo_row, promo_day = promo_row[keep], promo_day[keep]
    return pl.concat(
        [
            _signal_frame(
                grid,
                "price",
                price_day,
                population.price[price_row, price_day],
                population.sku_ids.gather(price_row),
                None,
            ),
            _signal_frame(
                grid,
                "promotion",
                promo_day,
                population.sku_promo[promo_row, promo_day],
                population.sku_ids.gather(promo_row),
                None,
            ),
        ]
    )


@dataclass(frozen=True)
class _Transactions:
    series: np.ndarray  # index within the chunk
    day: np.ndarray
    ts_us: np.ndarray
    quantity: np.ndarray


def _transactions(
    rng: np.random.Generator,
    population: _Population,
    customer: np.ndarray,
    demand: np.ndarray,
    mean_quantity: np.ndarray,
    grid: _Grid,
) -> _Transactions:
    """Uncensored purchase (and return) events drawn from the daily demand rates."""
    counts = rng.poisson(demand)
    flat = np.repeat(np.arange(counts.size), counts.ravel())
    series, day = np.divmod(flat, grid.n_days)
    store = customer[series]
    cdf = (population.hour_cdf + np.arange(len(population.hour_cdf))[:, None]).ravel()
    hour = np.searchsorted(cdf, rng.random(len(flat)) + store, side="right") - store * 24
    second = np.floor(rng.random(len(flat)) * 3600).astype(np.int64)
    ts_us = grid.day0_us + day * US_PER_DAY + hour * US_PER_HOUR + second * US_PER_SECOND
    is_return = rng.random(len(flat)) < RETURN_SHARE
    bought = rng.geometric(1.0 / mean_quantity[series])
    returned = rng.geometric(0.7, len(flat))
    quantity = np.where(is_return, -returned, bought).astype(np.float64)
    return _Transactions(series, day, ts_us, quantity)


def _serve_from_stock(
    rng: np.random.Generator,
    tx: _Transactions,
    n: int,
    delivery_weekday: np.ndarray,
    order_up_to: np.ndarray,
    grid: _Grid,
) -> tuple[np.ndarray, np.ndarray]:
    """Walk the days: deliver at 00:00, snapshot on_hand, serve purchases in time order.

    Returns (kept: bool per transaction, on_hand: series x days). A purchase is served only
    while the day's cumulative purchases fit in the stock; returns are always kept.
    """
    stock = np.floor(order_up_to * rng.uniform(0.4, 1.0, n))
    failed = rng.random((n, grid.n_days)) < DELIVERY_FAIL_PROB
    order = np.lexsort((tx.ts_us, tx.series, tx.day))
    series, quantity = tx.series[order], tx.quantity[order]
    bounds = np.searchsorted(tx.day[order], np.arange(grid.n_days + 1))
    kept_sorted = np.ones(len(order), dtype=bool)
    on_hand = np.zeros((n, grid.n_days))
    for d in range(grid.n_days):
        delivers = (delivery_weekday == grid.weekday[d]) & ~failed[:, d]
        stock = np.where(delivers, np.maximum(stock, order_up_to), stock)
        on_hand[:, d] = stock
        lo, hi = bounds[d], bounds[d + 1]
        s, q = series[lo:hi], quantity[lo:hi]
        wanted = np.maximum(q, 0.0)
        running = np.cumsum(wanted)
        first = np.ones(len(s), dtype=bool)
        first[1:] = s[1:] != s[:-1]
        group = np.cumsum(first) - 1
        within = running - (running - wanted)[first][group]
        served = (q <= 0) | (within <= stock[s])
        kept_sorted[lo:hi] = served
        stock = stock - np.bincount(s, weights=wanted * served, minlength=n)
    kept = np.empty_like(kept_sorted)
    kept[order] = kept_sorted
    return kept, on_hand


@dataclass(frozen=True)
class _SeriesDraw:
    """Per-series parameters of one chunk, drawn in a fixed order from the chunk's stream."""

    customer: np.ndarray
    sku: np.ndarray
    base_rate: np.ndarray  # purchases per day before weekday, trend, promotion and price
    mean_quantity: np.ndarray
    trend: np.ndarray  # log change per 30 days
    promo_lift: np.ndarray
    own_promo: np.ndarray  # series x plan days, bool: the series' own promotions
    promo: np.ndarray  # own or SKU-wide promotion


def _draw_series(
    rng: np.random.Generator, population: _Population, grid: _Grid, series_index: np.ndarray
) -> _SeriesDraw:
    n = len(series_index)
    customer = population.series_customer[series_index]
    sku = population.series_sku[series_index]
    base_rate = (
        population.sku_rate[sku] * population.store_size[customer] * np.exp(rng.normal(0, 0.3, n))
    )
    mean_quantity = 1.0 + np.exp(rng.normal(np.log(0.5), 0.6, n))
    trend = rng.normal(0.0, TREND_SD_PER_30_DAYS, n)
    promo_lift = PROMO_LIFT_MEDIAN * np.exp(rng.normal(0.0, 0.2, n))
    own_promo = _promo_windows(rng, n, grid.n_plan, PROMO_SERIES_SHARE, PROMOS_PER_90_DAYS)
    return _SeriesDraw(
        customer=customer,
        sku=sku,
        base_rate=base_rate,
        mean_quantity=mean_quantity,
        trend=trend,
        promo_lift=promo_lift,
        own_promo=own_promo,
        promo=own_promo | population.sku_promo[sku],
    )


def _daily_demand(population: _Population, grid: _Grid, draw: _SeriesDraw) -> np.ndarray:
    """Expected purchases per series x history day (0 on a store's closed Sundays)."""
    days = np.arange(grid.n_days)
    weekday = grid.weekday[: grid.n_days]
    customer, sku = draw.customer, draw.sku
    open_day = ~(population.sunday_closed[customer][:, None] & (weekday == 6)[None, :])
    price_ratio = population.price[sku, : grid.n_days] / population.base_price[sku][:, None]
    demand: np.ndarray = (
        draw.base_rate[:, None]
        * np.exp(draw.trend[:, None] * (days - grid.n_days / 2)[None, :] / 30.0)
        * np.asarray(WEEKDAY_FACTORS)[weekday][None, :]
        * open_day
        * grid.holiday[: grid.n_days][None, :]
        * np.where(draw.promo[:, : grid.n_days], draw.promo_lift[:, None], 1.0)
        * price_ratio ** population.elasticity[sku][:, None]
    )
    return demand


def _demand_chunk(
    population: _Population, grid: _Grid, *, chunk: int, series_index: np.ndarray, seed: int
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    rng = rng_for(seed, STREAM_DEMAND_CHUNK, chunk)
    n = len(series_index)
    draw = _draw_series(rng, population, grid, series_index)
    customer, sku = draw.customer, draw.sku
    demand = _daily_demand(population, grid, draw)
    tx = _transactions(rng, population, customer, demand, draw.mean_quantity, grid)

    cover_weeks = rng.uniform(*COVER_WEEKS_RANGE, n)
    order_up_to = np.maximum(2.0, np.ceil(cover_weeks * 7 * draw.base_rate * draw.mean_quantity))
    delivery_weekday = population.delivery_weekday[customer]
    kept, on_hand = _serve_from_stock(rng, tx, n, delivery_weekday, order_up_to, grid)
    kept &= tx.ts_us < grid.end_us
    wanted = np.maximum(tx.quantity, 0.0)
    demand_units = np.bincount(tx.series, weights=wanted, minlength=n)
    sold_units = np.bincount(tx.series, weights=wanted * kept, minlength=n)

    customer_ids = population.customer_ids.gather(customer)
    sku_ids = population.sku_ids.gather(sku)
    sales = _sales_frame(rng, population, tx, kept, customer, sku, customer_ids, sku_ids)
    inventory = _inventory_frame(grid, on_hand, customer_ids, sku_ids)
    signals = _promotion_signals(grid, draw.own_promo, customer_ids, sku_ids)
    truth = _demand_truth(population, draw, customer_ids, sku_ids).with_columns(
        pl.Series("delivery_weekday", delivery_weekday),
        pl.Series("order_up_to", order_up_to),
        pl.Series("stockout_days", (on_hand == 0).sum(axis=1)),
        pl.Series("demand_units", demand_units),
        pl.Series("sold_units", sold_units),
        pl.Series("censored_units", demand_units - sold_units),
    )
    return {"sales": sales, "signals": signals, "inventory": inventory}, truth


def _inventory_frame(
    grid: _Grid, on_hand: np.ndarray, customer_ids: pl.Series, sku_ids: pl.Series
) -> pl.DataFrame:
    """One on-hand snapshot per series at 00:00 of every history day up to the world's end."""
    days = np.arange(grid.n_days)
    snapshot_days = np.flatnonzero(grid.day0_us + days * US_PER_DAY <= grid.end_us)
    inv_series = np.repeat(np.arange(len(on_hand)), len(snapshot_days))
    inv_day = np.tile(snapshot_days, len(on_hand))
    return pl.DataFrame(
        [
            us_to_datetime(grid.day0_us + inv_day * US_PER_DAY, "ts"),
            customer_ids.gather(inv_series),
            sku_ids.gather(inv_series),
            pl.Series("on_hand", on_hand[inv_series, inv_day]),
        ]
    )


def _promotion_signals(
    grid: _Grid, own_promo: np.ndarray, customer_ids: pl.Series, sku_ids: pl.Series
) -> pl.DataFrame:
    """The series' own promotion plans as `promotion` signal rows (only series with one)."""
    promo_row, promo_day = _step_rows(own_promo)
    keep = np.asarray(own_promo.any(axis=1))[promo_row]
    promo_row, promo_day = promo_row[keep], promo_day[keep]
    return _signal_frame(
        grid,
        "promotion",
        promo_day,
        own_promo[promo_row, promo_day],
        sku_ids.gather(promo_row),
        customer_ids.gather(promo_row),
    )


def _demand_truth(
    population: _Population, draw: _SeriesDraw, customer_ids: pl.Series, sku_ids: pl.Series
) -> pl.DataFrame:
    """The per-series truth known before serving from stock (stock columns are added after)."""
    customer, sku = draw.customer, draw.sku
    store_type = population.store_type[customer]
    return pl.DataFrame(
        [
            customer_ids,
            sku_ids,
            labels(store_type, STORE_TYPES, "store_type"),
            labels(population.store_region[customer], REGIONS, "region"),
            pl.Series("base_rate_per_day", draw.base_rate),
            pl.Series("mean_quantity", draw.mean_quantity),
            pl.Series("base_units_per_day", draw.base_rate * draw.mean_quantity),
            pl.Series("elasticity", population.elasticity[sku]),
            pl.Series("base_price", population.base_price[sku]),
            pl.Series("trend_per_30_days", draw.trend),
            pl.Series("promo_lift", draw.promo_lift),
            pl.Series("long_tail", population.long_tail[sku]),
            pl.Series(
                "closed_buckets",
                [closed_buckets(t) for t in STORE_TYPES],
                dtype=pl.List(pl.Int64),
            ).gather(store_type),
            pl.Series("closed_weekdays", [[], [6]], dtype=pl.List(pl.Int64)).gather(
                population.sunday_closed[customer].astype(np.int64)
            ),
        ]
    )


def _sales_frame(
    rng: np.random.Generator,
    population: _Population,
    tx: _Transactions,
    kept: np.ndarray,
    customer: np.ndarray,
    sku: np.ndarray,
    customer_ids: pl.Series,
    sku_ids: pl.Series,
) -> pl.DataFrame:
    """Served transactions, ordered by series then time."""
    idx = np.flatnonzero(kept)
    idx = idx[np.lexsort((tx.ts_us[idx], tx.series[idx]))]
    series, day = tx.series[idx], tx.day[idx]
    unit_price = population.price[sku[series], day]
    unit_price = np.where(rng.random(len(idx)) < NULL_PRICE_SHARE, np.nan, unit_price)
    return pl.DataFrame(
        [
            us_to_datetime(tx.ts_us[idx], "ts"),
            customer_ids.gather(series),
            sku_ids.gather(series),
            pl.Series("quantity", tx.quantity[idx]),
            pl.Series("unit_price", unit_price).fill_nan(None),
            labels(population.store_region[customer[series]], REGIONS, "region"),
        ]
    )


def demand_chunks(
    n_series: int = 200,
    days: int = 90,
    seed: int = 0,
    end: datetime = WORLD_END,
    progress: Progress | None = None,
) -> Iterator[tuple[dict[str, pl.DataFrame], pl.DataFrame]]:
    """The demand world in chunks of `CHUNK_SERIES` series (bounded memory).

    The first chunk's signals also hold the chain-wide rows (prices, chain promotions);
    concatenating the chunks gives exactly `demand_world(...)` with the same arguments.
    """
    if n_series < 1 or days < 1:
        raise ValueError("n_series and days must be >= 1")
    grid = _grid(check_end(end), days)
    population = _population(n_series, seed, grid)
    for chunk, first in enumerate(range(0, n_series, CHUNK_SERIES)):
        index = np.arange(first, min(first + CHUNK_SERIES, n_series))
        tables, truth = _demand_chunk(population, grid, chunk=chunk, series_index=index, seed=seed)
        if chunk == 0:
            tables["signals"] = pl.concat([_chain_signals(population, grid), tables["signals"]])
        report(progress, "demand", (index[-1] + 1) / n_series)
        yield tables, truth


def demand_world(
    n_series: int = 200, days: int = 90, seed: int = 0, end: datetime = WORLD_END
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """A seeded retail world: `n_series` store x SKU series over the `days` before `end`.

    Returns {"sales", "signals", "inventory"} (UTC datetimes; sales and inventory up to `end`,
    signals planned to `end` + SIGNAL_HORIZON_DAYS) and the per-series truth (base rate,
    elasticity, trend, promotion lift, closed buckets / weekdays, stock-out days, censored units).
    """
    parts: dict[str, list[pl.DataFrame]] = {name: [] for name in DEMAND_TABLES}
    truths = []
    for tables, truth in demand_chunks(n_series, days, seed, end):
        for name, frame in tables.items():
            parts[name].append(frame)
        truths.append(truth)
    return {name: pl.concat(frames) for name, frames in parts.items()}, pl.concat(truths)
