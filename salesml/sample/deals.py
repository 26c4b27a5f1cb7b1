"""The synthetic CRM world: deals, stage history, close-date changes, activities, accounts.

Seeded and vectorised (numpy draws, polars frames; loops only over the 4 stages and the few
close-date slips). Every effect below is planted on purpose, with its true size exported as a
constant, so a model trained on the tables can be checked against the truth.

How a deal lives (all per deal, independently, given the shared accounts and reps):
1. It is created in the window `(end - days, end]`; the creation rate doubles each year
   (`PIPELINE_GROWTH_PER_YEAR`), so recent months hold more deals: ~18 % of deals are still
   open at `end` with one year of history, ~12 % with two.
2. A latent buyer interest `z ~ N(0, 1)` (hidden; exported in the truth) drives the deal
   through the stages qualification -> discovery -> proposal -> negotiation: the chance to
   advance is `sigmoid(ADVANCE_LOG_ODDS[s] + ADVANCE_INTEREST_SLOPE * z)`; the dwell in each
   stage is log-normal around `STAGE_MEDIAN_DAYS` (interested buyers move faster). The deal
   closes when it leaves its last stage; a `deal_stage_history` row marks each stage entered.
3. Activities: a steady stream over the deal's life plus a burst in the last days before the
   close (decision meetings). Interested buyers get more activities, more meetings / demos /
   technical documents, and more senior contacts (cto, ceo, vp); the mix also follows the stage
   (proposals in proposal / negotiation, procurement in negotiation). ~8 % of contacts have no
   role (null). ~8 % extra activities are account-level (deal_id null) and carry no effect.
4. The expected close date is set at creation (`deals.expected_close_at`); each time it passes
   while the deal is still open the rep pushes it out (with probability `SLIP_UPDATE_PROB`, at
   most `MAX_SLIPS` times): one `deal_close_date_history` row per slip.
5. The outcome is decided AT CLOSE TIME from the deal's state then (a point-in-time snapshot
   before the close sees informative but noisy signals):

       log-odds = BASE_LOG_ODDS
                + STAGE_EFFECTS[stage at close]
                + LATENT_INTEREST_EFFECT * z
                + behaviour score at close                       (see below)
                - DWELL_PENALTY_PER_WEEK * sum over stages of max(0, dwell - median) / 7 days
                + SLIP_EFFECT * number of slips
                + rep skill (owner effect, N(0, REP_SKILL_SD), one per rep)
                + INDUSTRY_EFFECTS[account industry]
                + AMOUNT_EFFECT_PER_LOG * ln(amount / AMOUNT_REFERENCE)   (large deals win less)

   behaviour score at t = sum over the deal's activities a with occurred_at <= t of
       PLANTED_ACTIVITY_EFFECTS[(type_a, role_a)] * 2 ** (-(t - occurred_at_a) / 72 h)
   (72 h half-life, `BEHAVIOR_HALF_LIFE_HOURS`; null role and pairs absent from the dict add 0).

   With `signal=False` the outcome is Bernoulli(NULL_WORLD_WIN_RATE), independent of every
   feature; all other tables are identical to the `signal=True` world with the same seed.

Deals whose close falls after `end` are open: closed_at and outcome null, and nothing after
`end` (stages, slips, activities) appears in the tables. The truth frame still holds their
eventual close time and outcome (`final_closed_at`, `final_outcome`) for evaluating forecasts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from salesml.numeric import sigmoid
from salesml.progress import Progress, report
from salesml.sample._common import (
    STREAM_DEAL_CHUNK,
    STREAM_DEAL_GLOBALS,
    WORLD_END,
    check_end,
    day_offsets_to_datetime,
    draw_categorical,
    draw_from_weights,
    epoch_us,
    labels,
    make_ids,
    rng_for,
    window_start,
)

STAGES: tuple[str, ...] = ("qualification", "discovery", "proposal", "negotiation")
ACTIVITY_TYPES: tuple[str, ...] = (
    "email",
    "call",
    "meeting",
    "demo",
    "proposal_sent",
    "tech_doc_shared",
)
CONTACT_ROLES: tuple[str, ...] = ("cto", "ceo", "vp", "engineer", "procurement", "other")
INDUSTRIES: tuple[str, ...] = (
    "software",
    "finance",
    "healthcare",
    "manufacturing",
    "retail",
    "public_sector",
    "education",
)
REGIONS: tuple[str, ...] = ("north_america", "emea", "apac", "latam")
PRODUCTS: tuple[str, ...] = ("core", "analytics", "platform", "services")

# ---- planted effects on the win log-odds (the truth later models must recover) -------------
PLANTED_ACTIVITY_EFFECTS: dict[tuple[str, str], float] = {
    ("email", "cto"): 0.05,
    ("email", "ceo"): 0.05,
    ("email", "vp"): 0.05,
    ("email", "engineer"): 0.0,
    ("email", "procurement"): 0.15,
    ("email", "other"): 0.0,
    ("call", "cto"): 0.3,
    ("call", "ceo"): 0.3,
    ("call", "vp"): 0.2,
    ("call", "engineer"): 0.05,
    ("call", "procurement"): 0.1,
    ("call", "other"): 0.0,
    ("meeting", "cto"): 0.6,
    ("meeting", "ceo"): 0.7,
    ("meeting", "vp"): 0.4,
    ("meeting", "engineer"): 0.15,
    ("meeting", "procurement"): 0.3,
    ("meeting", "other"): 0.0,
    ("demo", "cto"): 1.0,
    ("demo", "ceo"): 0.5,
    ("demo", "vp"): 0.5,
    ("demo", "engineer"): 0.3,
    ("demo", "procurement"): 0.0,
    ("demo", "other"): 0.0,
    ("proposal_sent", "cto"): 0.2,
    ("proposal_sent", "ceo"): 0.4,
    ("proposal_sent", "vp"): 0.3,
    ("proposal_sent", "engineer"): 0.0,
    ("proposal_sent", "procurement"): 0.5,
    ("proposal_sent", "other"): -0.2,
    ("tech_doc_shared", "cto"): 0.9,
    ("tech_doc_shared", "ceo"): 0.1,
    ("tech_doc_shared", "vp"): 0.1,
    ("tech_doc_shared", "engineer"): 0.35,
    ("tech_doc_shared", "procurement"): -0.1,
    ("tech_doc_shared", "other"): 0.0,
}
"""Log-odds added by one activity of (type, role) at the instant it happens; decays with a
72 h half-life. A null contact role adds 0."""

BEHAVIOR_HALF_LIFE_HOURS = 72.0


@dataclass(frozen=True)
class ActionMechanism:
    """How activities act on the outcome and who gets which (the world's causal wiring).

    The default is the world described above: an activity's effect halves every 72 h and only
    the behaviour score AT the close counts, and interested buyers get more senior contacts,
    demos and technical documents (the mix follows the latent interest). There an activity done
    weeks before the close changes nothing, and the type / role mix is confounded with interest:
    point-in-time snapshots carry almost no pair-specific signal to learn from
    (`benchmarks/bench_deal_actions.py`, `snapshot_oracle`).

    `ACTION_EXPERIMENT` is the world a next-best-action recommender can be validated on: the
    effect of an activity lasts (`effect_half_life_hours`, e.g. a demo to the CTO keeps its
    value for weeks) and which type and role an activity has is assigned at random given the
    deal's stage, as in a randomised experiment (`mix_follows_interest=False`; the number of
    activities, and the stage reached, still follow interest). Only the outcomes and the
    activity mix move; the draws keep their order, so deals, stages and slips are the same.
    """

    effect_half_life_hours: float = BEHAVIOR_HALF_LIFE_HOURS
    mix_follows_interest: bool = True


DEFAULT_MECHANISM = ActionMechanism()
ACTION_EXPERIMENT = ActionMechanism(effect_half_life_hours=30 * 24.0, mix_follows_interest=False)
STAGE_EFFECTS: dict[str, float] = {
    "qualification": -1.8,
    "discovery": -1.0,
    "proposal": 0.0,
    "negotiation": 0.7,
}
"""Log-odds by the stage the deal is in when it closes (deals that stall early mostly lose)."""
STAGE_MEDIAN_DAYS: dict[str, float] = {
    "qualification": 14.0,
    "discovery": 21.0,
    "proposal": 18.0,
    "negotiation": 14.0,
}
DWELL_PENALTY_PER_WEEK = 0.25
"""Log-odds lost per week a deal spent in a stage beyond that stage's median dwell."""
SLIP_EFFECT = -0.35
"""Log-odds per slip of the expected close date (a change to a later date)."""
LATENT_INTEREST_EFFECT = 0.6
"""Log-odds per standard deviation of the hidden buyer interest (which also drives activity)."""
REP_SKILL_SD = 0.5
INDUSTRY_EFFECTS: dict[str, float] = {
    "software": 0.3,
    "finance": 0.1,
    "healthcare": -0.2,
    "manufacturing": 0.0,
    "retail": -0.3,
    "public_sector": -0.5,
    "education": -0.1,
}
AMOUNT_EFFECT_PER_LOG = -0.3
AMOUNT_REFERENCE = 25_000.0
BASE_LOG_ODDS = -0.15
NULL_WORLD_WIN_RATE = 0.35
"""Win probability of every deal in the no-signal world (`signal=False`)."""

# ---- how the world is generated (not effects on the outcome) ------------------------------
PIPELINE_GROWTH_PER_YEAR = 1.0
ADVANCE_LOG_ODDS: tuple[float, float, float] = (1.0, 0.6, 0.8)
ADVANCE_INTEREST_SLOPE = 0.8
DWELL_INTEREST_SLOPE = -0.25
DWELL_LOG_SD = 0.7
MAX_DWELL_MEDIANS = 4.0
"""A deal stuck longer than this many stage medians is closed out of that stage (stale cleanup)."""
PLANNED_CLOSE_DAYS = 55.0
SLIP_UPDATE_PROB = 0.85
MAX_SLIPS = 4
ACTIVITY_RATE_PER_DAY = 0.12
CLOSING_BURST_MEAN = 3.0
CLOSING_BURST_SCALE_DAYS = 2.0
NULL_ROLE_SHARE = 0.08
ACCOUNT_ACTIVITY_SHARE = 0.08
NULL_AMOUNT_SHARE = 0.01
NULL_REGION_SHARE = 0.02
NULL_PRODUCT_SHARE = 0.01
CHUNK_DEALS = 50_000
"""Deals are generated in chunks of this size (bounded memory); part of the seed's meaning."""

INDUSTRY_WEIGHTS = (0.25, 0.15, 0.12, 0.15, 0.13, 0.1, 0.1)
REGION_WEIGHTS = (0.45, 0.3, 0.15, 0.1)
PRODUCT_WEIGHTS = (0.4, 0.25, 0.15, 0.2)
PRODUCT_MEDIAN_AMOUNT = np.array([20_000.0, 35_000.0, 90_000.0, 8_000.0])

# Activity mix: logits over ACTIVITY_TYPES / CONTACT_ROLES; rows of the stage tables follow STAGES.
TYPE_BASE = np.array([1.4, 0.8, 0.2, -0.6, -3.0, -0.9], dtype=np.float32)
TYPE_INTEREST_SLOPE = np.array([-0.3, 0.0, 0.3, 0.4, 0.1, 0.3], dtype=np.float32)
TYPE_BY_STAGE = np.array(
    [
        [0.3, 0.3, 0.0, -0.8, -2.0, -1.0],
        [0.0, 0.0, 0.2, 0.8, -1.0, 0.4],
        [0.0, 0.0, 0.0, 0.0, 2.5, 0.3],
        [0.0, 0.3, 0.2, -0.3, 2.0, -0.2],
    ],
    dtype=np.float32,
)
ROLE_BASE = np.array([-0.3, -1.4, -0.2, 0.6, -0.8, 0.5], dtype=np.float32)
ROLE_INTEREST_SLOPE = np.array([0.4, 0.45, 0.3, 0.0, 0.0, -0.3], dtype=np.float32)
ROLE_BY_STAGE = np.array(
    [
        [0.0, 0.0, 0.0, 0.0, -1.0, 0.3],
        [0.2, 0.0, 0.0, 0.4, -0.5, 0.0],
        [0.0, 0.2, 0.2, 0.0, 0.3, 0.0],
        [0.0, 0.3, 0.2, -0.3, 1.3, -0.2],
    ],
    dtype=np.float32,
)
ROLE_BY_TYPE = np.array(
    [
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.3],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.1, 0.3, 0.2, 0.0, 0.0, 0.0],
        [0.3, -0.5, 0.0, 0.5, -1.0, 0.0],
        [0.0, 0.3, 0.2, -1.0, 0.8, 0.0],
        [0.4, -1.0, -0.5, 0.8, -0.3, 0.0],
    ],
    dtype=np.float32,
)

DEAL_TABLES: tuple[str, ...] = (
    "deals",
    "deal_stage_history",
    "deal_close_date_history",
    "activities",
    "accounts",
)


def effect_matrix() -> np.ndarray:
    """PLANTED_ACTIVITY_EFFECTS as a (type x role+null) array; the last column (null role) is 0."""
    matrix = np.zeros((len(ACTIVITY_TYPES), len(CONTACT_ROLES) + 1))
    for (activity_type, role), value in PLANTED_ACTIVITY_EFFECTS.items():
        matrix[ACTIVITY_TYPES.index(activity_type), CONTACT_ROLES.index(role)] = value
    return matrix


@dataclass(frozen=True)
class _Population:
    """Accounts and reps shared by every chunk of one world."""

    accounts: pl.DataFrame
    account_p: np.ndarray
    industry: np.ndarray
    region: np.ndarray
    employees: np.ndarray
    rep_skill: np.ndarray
    rep_p: np.ndarray


def _population(n_deals: int, seed: int) -> _Population:
    rng = rng_for(seed, STREAM_DEAL_GLOBALS)
    n_accounts = max(20, n_deals // 3)
    industry = draw_from_weights(rng, INDUSTRY_WEIGHTS, n_accounts)
    region = draw_from_weights(rng, REGION_WEIGHTS, n_accounts)
    employees = np.clip(np.round(np.exp(rng.normal(np.log(250.0), 1.4, n_accounts))), 5, 300_000)
    revenue = np.round(employees * 180_000.0 * np.exp(rng.normal(0.0, 0.5, n_accounts)), -3)
    account_weight = np.exp(rng.normal(0.0, 0.8, n_accounts))
    n_reps = int(np.clip(n_deals // 120, 8, 20_000))
    rep_skill = rng.normal(0.0, REP_SKILL_SD, n_reps)
    rep_weight = np.exp(rng.normal(0.0, 0.3, n_reps))
    accounts = pl.DataFrame(
        [
            make_ids("ACC", np.arange(1, n_accounts + 1), 7, "account_id"),
            labels(industry, INDUSTRIES, "industry"),
            labels(region, REGIONS, "region"),
            pl.Series("employees", employees.astype(np.int64)),
            pl.Series("annual_revenue", revenue),
        ]
    )
    return _Population(
        accounts=accounts,
        account_p=account_weight / account_weight.sum(),
        industry=industry,
        region=region,
        employees=employees,
        rep_skill=rep_skill,
        rep_p=rep_weight / rep_weight.sum(),
    )


def _created_offsets(rng: np.random.Generator, n: int, days: int) -> np.ndarray:
    """Creation times in days after the window start, with a rate growing exponentially."""
    growth = np.log1p(PIPELINE_GROWTH_PER_YEAR) / 365.0
    u = rng.random(n)
    offsets: np.ndarray = np.log1p(u * np.expm1(growth * days)) / growth
    return offsets


def _slips(
    rng: np.random.Generator, created: np.ndarray, expected: np.ndarray, close: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Push the expected close out each time it passes while the deal is open.

    Returns (number of slips per deal, deal index, changed_at offset, new expected offset) for
    every slip. A slip is recorded shortly before the old date; each new date is >= 7 days later,
    so the changes of one deal are strictly ordered and all happen before the close.
    """
    n = len(created)
    current = expected.copy()
    active = np.ones(n, dtype=bool)
    n_slips = np.zeros(n, dtype=np.int64)
    rows_deal, rows_changed, rows_new = [], [], []
    for _ in range(MAX_SLIPS):
        updates = rng.random(n) < SLIP_UPDATE_PROB
        lead = rng.uniform(0.0, 4.0, n)
        push = 7.0 + np.exp(rng.normal(np.log(14.0), 0.5, n))
        active &= (current < close) & updates
        changed = np.maximum(created, current - lead)
        new_date = current + push
        idx = np.flatnonzero(active)
        rows_deal.append(idx)
        rows_changed.append(changed[idx])
        rows_new.append(new_date[idx])
        current = np.where(active, new_date, current)
        n_slips += active
    return (
        n_slips,
        np.concatenate(rows_deal),
        np.concatenate(rows_changed),
        np.concatenate(rows_new),
    )


@dataclass(frozen=True)
class _Activities:
    deal: np.ndarray  # index within the chunk
    occurred: np.ndarray  # day offset
    activity_type: np.ndarray  # code into ACTIVITY_TYPES
    role: np.ndarray  # code into CONTACT_ROLES, -1 = null


def _deal_activities(
    rng: np.random.Generator,
    interest: np.ndarray,
    created: np.ndarray,
    close: np.ndarray,
    entered: np.ndarray,
    mechanism: ActionMechanism,
) -> _Activities:
    """Every activity of every deal over its whole life (visibility is applied later)."""
    life = close - created
    n_steady = rng.poisson(ACTIVITY_RATE_PER_DAY * np.exp(0.5 * interest) * life)
    n_burst = rng.poisson(CLOSING_BURST_MEAN * np.exp(0.4 * interest))
    steady_deal = np.repeat(np.arange(len(created)), n_steady)
    burst_deal = np.repeat(np.arange(len(created)), n_burst)
    steady_time = created[steady_deal] + rng.random(len(steady_deal)) * life[steady_deal]
    burst_time = np.maximum(
        created[burst_deal],
        close[burst_deal] - rng.exponential(CLOSING_BURST_SCALE_DAYS, len(burst_deal)),
    )
    deal = np.concatenate([steady_deal, burst_deal])
    occurred = np.concatenate([steady_time, burst_time])
    stage = np.zeros(len(deal), dtype=np.int64)
    for s in range(1, len(STAGES)):
        stage += occurred >= entered[s, deal]
    z = interest[deal].astype(np.float32)[:, None]
    if not mechanism.mix_follows_interest:
        z = np.zeros_like(z)
    activity_type = draw_categorical(
        rng, TYPE_BASE + z * TYPE_INTEREST_SLOPE + TYPE_BY_STAGE[stage]
    )
    role = draw_categorical(
        rng,
        ROLE_BASE + z * ROLE_INTEREST_SLOPE + ROLE_BY_STAGE[stage] + ROLE_BY_TYPE[activity_type],
    ).astype(np.int64)
    role[rng.random(len(deal)) < NULL_ROLE_SHARE] = -1
    return _Activities(deal, occurred, activity_type.astype(np.int64), role)


def _account_activities(
    rng: np.random.Generator, population: _Population, n: int, days: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Account-level touches (deal_id null): no effect on any outcome."""
    account = rng.choice(len(population.account_p), n, p=population.account_p)
    occurred = rng.random(n) * days
    zeros = np.zeros((n, 1), dtype=np.float32)
    activity_type = draw_categorical(rng, TYPE_BASE + zeros + TYPE_BY_STAGE[0]).astype(np.int64)
    role = draw_categorical(rng, ROLE_BASE + zeros + ROLE_BY_STAGE[0]).astype(np.int64)
    role[rng.random(n) < NULL_ROLE_SHARE] = -1
    return account, occurred, activity_type, role


@dataclass(frozen=True)
class _Deals:
    """One chunk's deals as drawn: attributes, latent interest and the path through the stages.

    Times are day offsets from the window start; `entered` and `reached` are stages x deals
    (`entered` is inf for a stage never reached); `close` is when the deal leaves its last stage.
    """

    account: np.ndarray
    owner: np.ndarray
    product: np.ndarray
    amount: np.ndarray
    interest: np.ndarray
    created: np.ndarray
    last_stage: np.ndarray
    reached: np.ndarray
    entered: np.ndarray
    close: np.ndarray
    excess_days: np.ndarray  # days spent beyond the stage medians, summed over stages


def _draw_deals(rng: np.random.Generator, population: _Population, n: int, days: int) -> _Deals:
    """Attributes, interest and stage path of `n` deals (the chunk stream's first draws)."""
    account = rng.choice(len(population.account_p), n, p=population.account_p)
    owner = rng.choice(len(population.rep_p), n, p=population.rep_p)
    product = draw_from_weights(rng, PRODUCT_WEIGHTS, n)
    size_factor = (population.employees[account] / 250.0) ** 0.25
    amount = PRODUCT_MEDIAN_AMOUNT[product] * size_factor * np.exp(rng.normal(0.0, 0.6, n))
    amount = np.maximum(np.round(amount, -1), 10.0)
    interest = rng.normal(0.0, 1.0, n)
    created = _created_offsets(rng, n, days)
    last_stage, reached, entered, close, excess_days = _stage_path(rng, interest, created)
    return _Deals(
        account=account,
        owner=owner,
        product=product,
        amount=amount,
        interest=interest,
        created=created,
        last_stage=last_stage,
        reached=reached,
        entered=entered,
        close=close,
        excess_days=excess_days,
    )


def _stage_path(
    rng: np.random.Generator, interest: np.ndarray, created: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(last stage, reached, entered, close, excess days): log-normal dwells around the stage
    medians, advancing with a chance that grows with interest (see the module docstring).
    """
    n = len(created)
    medians = np.array([STAGE_MEDIAN_DAYS[s] for s in STAGES])[:, None]
    dwell = medians * np.minimum(
        np.exp(DWELL_INTEREST_SLOPE * interest + DWELL_LOG_SD * rng.normal(size=(len(STAGES), n))),
        MAX_DWELL_MEDIANS,
    )
    last_stage = np.zeros(n, dtype=np.int64)
    advancing = np.ones(n, dtype=bool)
    for log_odds in ADVANCE_LOG_ODDS:
        chance = sigmoid(log_odds + ADVANCE_INTEREST_SLOPE * interest)
        advancing &= rng.random(n) < chance
        last_stage += advancing
    reached = np.arange(len(STAGES))[:, None] <= last_stage[None, :]
    dwell = np.where(reached, dwell, 0.0)
    elapsed = np.vstack([np.zeros(n), np.cumsum(dwell, axis=0)])
    entered = np.where(reached, created + elapsed[:-1], np.inf)
    close = created + elapsed[-1]
    excess_days = np.where(reached, np.maximum(dwell - medians, 0.0), 0.0).sum(axis=0)
    return last_stage, reached, entered, close, excess_days


def _behaviour_at_close(
    acts: _Activities, close: np.ndarray, n: int, half_life_hours: float
) -> np.ndarray:
    """The planted behaviour score of each deal at its close (each activity's effect halved
    every `half_life_hours` from its time to the close).
    """
    half_life_days = half_life_hours / 24.0
    decay = np.exp2(-(close[acts.deal] - acts.occurred) / half_life_days)
    weight = effect_matrix()[acts.activity_type, acts.role]
    return np.bincount(acts.deal, weights=weight * decay, minlength=n)


def _win_log_odds(
    population: _Population, deals: _Deals, behaviour: np.ndarray, n_slips: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(log-odds of a win at close, dwell penalty): the formula of the module docstring."""
    industry = population.industry[deals.account]
    dwell_penalty = -DWELL_PENALTY_PER_WEEK * deals.excess_days / 7.0
    log_odds = (
        BASE_LOG_ODDS
        + np.array([STAGE_EFFECTS[s] for s in STAGES])[deals.last_stage]
        + LATENT_INTEREST_EFFECT * deals.interest
        + behaviour
        + dwell_penalty
        + SLIP_EFFECT * n_slips
        + population.rep_skill[deals.owner]
        + np.array([INDUSTRY_EFFECTS[i] for i in INDUSTRIES])[industry]
        + AMOUNT_EFFECT_PER_LOG * np.log(deals.amount / AMOUNT_REFERENCE)
    )
    return log_odds, dwell_penalty


@dataclass(frozen=True)
class _Outcomes:
    """How each deal ends: the planted causes at close and the drawn win."""

    behaviour: np.ndarray
    log_odds: np.ndarray  # nan in a world without signal
    win_probability: np.ndarray
    dwell_penalty: np.ndarray
    won: np.ndarray


def _outcomes(
    rng: np.random.Generator,
    population: _Population,
    deals: _Deals,
    acts: _Activities,
    n_slips: np.ndarray,
    signal: bool,
    mechanism: ActionMechanism,
) -> _Outcomes:
    """Win probability at close (NULL_WORLD_WIN_RATE without signal) and the drawn outcome."""
    n = len(deals.created)
    behaviour = _behaviour_at_close(acts, deals.close, n, mechanism.effect_half_life_hours)
    log_odds, dwell_penalty = _win_log_odds(population, deals, behaviour, n_slips)
    win_probability = sigmoid(log_odds) if signal else np.full(n, NULL_WORLD_WIN_RATE)
    won = rng.random(n) < win_probability
    shown = log_odds if signal else np.full(n, np.nan)
    return _Outcomes(behaviour, shown, win_probability, dwell_penalty, won)


def _deal_chunk(
    population: _Population,
    *,
    chunk: int,
    first: int,
    n: int,
    days: int,
    end: datetime,
    seed: int,
    signal: bool,
    first_activity: int,
    mechanism: ActionMechanism,
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """Deals number first+1 .. first+n of one world, as canonical tables plus their truth.

    The draws from the chunk's stream keep one order (deals, expected close, slips,
    activities, outcomes, account activities, nulls): changing it changes every sample world.
    """
    rng = rng_for(seed, STREAM_DEAL_CHUNK, chunk)
    start_us = epoch_us(window_start(end, days))
    horizon = float(days)  # the world's end as a day offset
    deals = _draw_deals(rng, population, n, days)
    expected = deals.created + PLANNED_CLOSE_DAYS * np.exp(rng.normal(0.0, 0.3, n))
    n_slips, slip_deal, slip_changed, slip_new = _slips(rng, deals.created, expected, deals.close)
    acts = _deal_activities(
        rng, deals.interest, deals.created, deals.close, deals.entered, mechanism
    )
    outcomes = _outcomes(rng, population, deals, acts, n_slips, signal, mechanism)
    is_open = deals.close > horizon
    n_account_acts = int(rng.poisson(ACCOUNT_ACTIVITY_SHARE * len(acts.deal)))
    account_acts = _account_activities(rng, population, n_account_acts, days)
    deal_ids = make_ids("D", first + np.arange(1, n + 1), 8, "deal_id")
    outcome_code = np.where(is_open, -1, np.where(outcomes.won, 0, 1))
    tables = {
        "deals": _deals_frame(
            rng, population, deals, deal_ids, expected, outcome_code, start_us=start_us
        ),
        "deal_stage_history": _stage_history_frame(deals, deal_ids, horizon, start_us),
        "deal_close_date_history": _close_date_frame(
            deal_ids, slip_deal, slip_changed, slip_new, horizon=horizon, start_us=start_us
        ),
        "activities": _activity_frame(
            acts,
            account_acts,
            deal_ids=deal_ids,
            deal_account=deals.account,
            account_ids=population.accounts.get_column("account_id"),
            horizon=horizon,
            start_us=start_us,
            first_activity=first_activity,
        ),
    }
    truth = _deal_truth(
        population,
        deals,
        deal_ids,
        outcomes,
        n_slips=n_slips,
        n_activities=np.bincount(acts.deal, minlength=n),
        is_open=is_open,
        start_us=start_us,
    )
    return tables, truth


def _deal_truth(
    population: _Population,
    deals: _Deals,
    deal_ids: pl.Series,
    outcomes: _Outcomes,
    *,
    n_slips: np.ndarray,
    n_activities: np.ndarray,
    is_open: np.ndarray,
    start_us: int,
) -> pl.DataFrame:
    """The per-deal truth: hidden causes, the true win probability, the eventual outcome."""
    return pl.DataFrame(
        [
            deal_ids,
            pl.Series("latent_interest", deals.interest),
            pl.Series("true_behavior_score", outcomes.behaviour),
            pl.Series("true_log_odds", outcomes.log_odds),
            pl.Series("true_win_probability", outcomes.win_probability),
            pl.Series("rep_skill", population.rep_skill[deals.owner]),
            pl.Series("dwell_penalty", outcomes.dwell_penalty),
            pl.Series("n_slips", n_slips),
            labels(deals.last_stage, STAGES, "stage_at_close"),
            pl.Series("n_activities", n_activities),
            day_offsets_to_datetime(start_us, deals.close, "final_closed_at"),
            labels(np.where(outcomes.won, 0, 1), ("won", "lost"), "final_outcome"),
            pl.Series("open_at_end", is_open),
        ]
    )


def _deals_frame(
    rng: np.random.Generator,
    population: _Population,
    deals: _Deals,
    deal_ids: pl.Series,
    expected: np.ndarray,
    outcome_code: np.ndarray,
    *,
    start_us: int,
) -> pl.DataFrame:
    """The `deals` table, with some region, product and amount values hidden (null), drawn in
    that order; closed_at and outcome are null for deals still open (`outcome_code` -1).
    """
    n = len(deal_ids)
    region = population.region[deals.account].astype(np.int64)
    region[rng.random(n) < NULL_REGION_SHARE] = -1
    product_code = deals.product.astype(np.int64)
    product_code[rng.random(n) < NULL_PRODUCT_SHARE] = -1
    amount_shown = np.where(rng.random(n) < NULL_AMOUNT_SHARE, np.nan, deals.amount)
    account_ids = population.accounts.get_column("account_id")
    closed = np.where(outcome_code < 0, np.nan, deals.close)
    return pl.DataFrame(
        [
            deal_ids,
            account_ids.gather(deals.account).alias("account_id"),
            make_ids("REP", deals.owner + 1, 5, "owner_id"),
            labels(region, REGIONS, "region"),
            labels(product_code, PRODUCTS, "product"),
            pl.Series("amount", amount_shown).fill_nan(None),
            day_offsets_to_datetime(start_us, deals.created, "created_at"),
            day_offsets_to_datetime(start_us, expected, "expected_close_at"),
            day_offsets_to_datetime(start_us, closed, "closed_at"),
            labels(outcome_code, ("won", "lost"), "outcome"),
        ]
    )


def _stage_history_frame(
    deals: _Deals, deal_ids: pl.Series, horizon: float, start_us: int
) -> pl.DataFrame:
    """One row per stage a deal entered by the world's end (`horizon` days)."""
    stage_deal, stage_code = np.nonzero((deals.reached & (deals.entered <= horizon)).T)
    return pl.DataFrame(
        [
            deal_ids.gather(stage_deal),
            labels(stage_code, STAGES, "stage"),
            day_offsets_to_datetime(start_us, deals.entered[stage_code, stage_deal], "entered_at"),
        ]
    )


def _close_date_frame(
    deal_ids: pl.Series,
    slip_deal: np.ndarray,
    slip_changed: np.ndarray,
    slip_new: np.ndarray,
    *,
    horizon: float,
    start_us: int,
) -> pl.DataFrame:
    """The slips recorded by the world's end, ordered by deal then change time."""
    visible = slip_changed <= horizon
    order = np.lexsort((slip_changed[visible], slip_deal[visible]))
    return pl.DataFrame(
        [
            deal_ids.gather(slip_deal[visible][order]),
            day_offsets_to_datetime(start_us, slip_changed[visible][order], "changed_at"),
            day_offsets_to_datetime(start_us, slip_new[visible][order], "expected_close_at"),
        ]
    )


def _activity_frame(
    acts: _Activities,
    account_acts: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    *,
    deal_ids: pl.Series,
    deal_account: np.ndarray,
    account_ids: pl.Series,
    horizon: float,
    start_us: int,
    first_activity: int,
) -> pl.DataFrame:
    """Visible activities (occurred by the world's end), deal ones first, ordered in time.

    `account_acts` = (account, occurred, type, role) of the account-level activities.
    """
    acc_account, acc_time, acc_type, acc_role = account_acts
    visible = acts.occurred <= horizon
    n_deals = len(deal_ids)
    deal = np.concatenate([acts.deal[visible], np.full(len(acc_account), n_deals)])
    occurred = np.concatenate([acts.occurred[visible], acc_time])
    account = np.concatenate([deal_account[acts.deal[visible]], acc_account])
    activity_type = np.concatenate([acts.activity_type[visible], acc_type])
    role = np.concatenate([acts.role[visible], acc_role])
    order = np.lexsort((occurred, deal))
    deal_ids_or_null = pl.concat([deal_ids, pl.Series("deal_id", [None], dtype=pl.String)])
    return pl.DataFrame(
        [
            make_ids("A", first_activity + np.arange(1, len(order) + 1), 10, "activity_id"),
            deal_ids_or_null.gather(deal[order]).alias("deal_id"),
            account_ids.gather(account[order]).alias("account_id"),
            day_offsets_to_datetime(start_us, occurred[order], "occurred_at"),
            labels(activity_type[order], ACTIVITY_TYPES, "activity_type"),
            labels(role[order], CONTACT_ROLES, "contact_role"),
        ]
    )


def deal_chunks(
    n_deals: int = 5000,
    days: int = 365,
    seed: int = 0,
    signal: bool = True,
    end: datetime = WORLD_END,
    progress: Progress | None = None,
    mechanism: ActionMechanism = DEFAULT_MECHANISM,
) -> Iterator[tuple[dict[str, pl.DataFrame], pl.DataFrame]]:
    """The deals world in chunks of `CHUNK_DEALS` deals (bounded memory for large worlds).

    The first chunk's tables also hold `accounts`; concatenating the chunks gives exactly
    `deals_world(...)` with the same arguments.
    """
    if n_deals < 1 or days < 1:
        raise ValueError("n_deals and days must be >= 1")
    end = check_end(end)
    population = _population(n_deals, seed)
    first_activity = 0
    for chunk, first in enumerate(range(0, n_deals, CHUNK_DEALS)):
        n = min(CHUNK_DEALS, n_deals - first)
        tables, truth = _deal_chunk(
            population,
            chunk=chunk,
            first=first,
            n=n,
            days=days,
            end=end,
            seed=seed,
            signal=signal,
            first_activity=first_activity,
            mechanism=mechanism,
        )
        first_activity += tables["activities"].height
        if chunk == 0:
            tables["accounts"] = population.accounts
        report(progress, "deals", (first + n) / n_deals)
        yield tables, truth


def deals_world(
    n_deals: int = 5000,
    days: int = 365,
    seed: int = 0,
    signal: bool = True,
    end: datetime = WORLD_END,
    mechanism: ActionMechanism = DEFAULT_MECHANISM,
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """A seeded CRM world of `n_deals` deals created in the `days` before `end`.

    Returns the canonical tables {"deals", "deal_stage_history", "deal_close_date_history",
    "activities", "accounts"} (UTC datetimes; nothing after `end`) and the per-deal truth
    (latent_interest, true_behavior_score, true_log_odds, true_win_probability, rep_skill,
    dwell_penalty, n_slips, stage_at_close, n_activities, final_closed_at, final_outcome,
    open_at_end). `signal=False`: same tables except that outcomes ignore every feature.
    `mechanism`: how activities act on outcomes (`ActionMechanism`; `ACTION_EXPERIMENT` for
    lasting effects and a randomised activity mix).
    """
    parts: dict[str, list[pl.DataFrame]] = {name: [] for name in DEAL_TABLES}
    truths = []
    for tables, truth in deal_chunks(n_deals, days, seed, signal, end, mechanism=mechanism):
        for name, frame in tables.items():
            parts[name].append(frame)
        truths.append(truth)
    return {name: pl.concat(frames) for name, frames in parts.items()}, pl.concat(truths)
