"""The skill gate: Brier skill over the base rate (bootstrap by deal) and over the logistic
baseline, for every candidate including the first."""

from __future__ import annotations

import math

import numpy as np
import pytest

from salesml import metrics
from salesml.tracking import SkillCheck, decide

SKILFUL = SkillCheck(0.10, 0.05, 0.15, brier=0.18, logistic_brier=0.20)


def test_a_first_model_without_skill_is_not_promoted() -> None:
    no_interval = SkillCheck(0.02, -0.01, 0.05, brier=0.18, logistic_brier=0.20)
    promoted, reason = decide("auc", "1", None, 0.9, None, skill=no_interval)
    assert not promoted and reason.startswith("no skill over the base rate")
    behind_logistic = SkillCheck(0.10, 0.05, 0.15, brier=0.21, logistic_brier=0.20)
    promoted, reason = decide("auc", "1", None, 0.9, None, skill=behind_logistic)
    assert not promoted and "the logistic baseline" in reason
    nan = SkillCheck(math.nan, math.nan, math.nan, brier=0.18, logistic_brier=0.20)
    assert not decide("auc", "1", None, 0.9, None, skill=nan)[0]


def test_a_skilful_candidate_still_meets_the_champion_rule() -> None:
    promoted, reason = decide("auc", "1", None, 0.8, None, skill=SKILFUL)
    assert promoted and "no champion yet" in reason and "skilful" in reason
    assert not decide("auc", "3", "2", 0.7, 0.8, skill=SKILFUL)[0]
    assert decide("auc", "3", "2", 0.9, 0.8, skill=SKILFUL)[0]
    assert decide("auc", "1", None, 0.8, None)[0]  # without skill numbers: the old rule


def test_bootstrap_resamples_deals_and_brackets_the_skill() -> None:
    rng = np.random.default_rng(0)
    deals = np.repeat(np.arange(300), 4)  # four snapshots per deal, correlated
    truth = rng.random(300) < 0.3
    y = truth[deals].astype(float)
    informative = np.where(y == 1, 0.6, 0.2)
    base = np.full(y.size, y.mean())
    skill, low, high = metrics.bootstrap_brier_skill(y, informative, base, deals, 200, 0.95, 1)
    assert low < skill < high and low > 0
    assert skill == pytest.approx(metrics.brier_skill_score(y, informative, base))
    noise = np.clip(base + rng.normal(0, 0.05, y.size), 0, 1)
    _, low_noise, _ = metrics.bootstrap_brier_skill(y, noise, base, deals, 200, 0.95, 1)
    assert low_noise < 0
    # resampling deals, not rows: the interval is wider than a row bootstrap would give
    rows = np.arange(y.size)
    _, row_low, row_high = metrics.bootstrap_brier_skill(y, informative, base, rows, 200, 0.95, 1)
    assert high - low > row_high - row_low
