"""Alert lifecycle: open once, keep, resolve; stable keys; re-open as a new occurrence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from salesml.alerts.rules import CANDIDATE_SCHEMA
from salesml.alerts.state import ALERT_SCHEMA, advance, alert_key, rows_to_write

T0 = datetime(2024, 6, 10, 9, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _cands(*rows: tuple[str, str, str]) -> pl.DataFrame:
    """(rule_id, subject_id, message) -> candidates of kind = rule_id, subject_type deal."""
    return pl.DataFrame(
        [
            {
                "rule_id": r,
                "kind": r,
                "subject_type": "deal",
                "subject_id": s,
                "severity": "high",
                "message": m,
            }
            for r, s, m in rows
        ],
        schema=CANDIDATE_SCHEMA,
    )


NONE = _cands()


def test_absent_present_present_absent_opens_once_keeps_key_and_resolves() -> None:
    first = advance(None, NONE, T0)
    assert first.height == 0 and first.schema == pl.Schema(ALERT_SCHEMA)
    second = advance(first, _cands(("health_red", "D1", "red at 12%")), T0 + HOUR)
    third = advance(second, _cands(("health_red", "D1", "red at 10%")), T0 + 2 * HOUR)
    fourth = advance(third, NONE, T0 + 3 * HOUR)
    assert [f.height for f in (second, third, fourth)] == [1, 1, 1]
    key = alert_key("health_red", "health_red", "deal", "D1", 1)
    assert second["alert_key"].to_list() == third["alert_key"].to_list() == [key]
    row = third.row(0, named=True)
    assert (row["status"], row["message"]) == ("open", "red at 10%")
    assert (row["first_seen_as_of"], row["last_seen_as_of"]) == (T0 + HOUR, T0 + 2 * HOUR)
    done = fourth.row(0, named=True)
    assert (done["status"], done["resolved_at"]) == ("resolved", T0 + 3 * HOUR)
    assert done["last_seen_as_of"] == T0 + 2 * HOUR


def test_key_depends_on_identity_not_message_or_as_of() -> None:
    one = advance(None, _cands(("r", "D1", "a")), T0)
    other = advance(None, _cands(("r", "D1", "b")), T0 + 5 * HOUR)
    assert one["alert_key"].to_list() == other["alert_key"].to_list()
    assert alert_key("r", "r", "deal", "D1", 1) != alert_key("r", "r", "deal", "D2", 1)
    assert len(alert_key("r", "r", "deal", "D1", 1)) == 24


def test_condition_back_after_resolving_is_a_new_occurrence() -> None:
    opened = advance(None, _cands(("r", "D1", "a")), T0)
    resolved = advance(opened, NONE, T0 + HOUR)
    again = advance(resolved, _cands(("r", "D1", "a")), T0 + 2 * HOUR)
    assert again.select("occurrence", "status").rows() == [(1, "resolved"), (2, "open")]
    assert again["alert_key"].n_unique() == 2


def test_open_alert_of_a_rule_not_evaluated_is_left_alone() -> None:
    opened = advance(None, _cands(("stock", "C1/S1", "low")), T0)
    after = advance(opened, _cands(("health_red", "D1", "red")), T0 + HOUR, {"health_red"})
    stock = after.filter(pl.col("rule_id") == "stock").row(0, named=True)
    assert (stock["status"], stock["last_seen_as_of"]) == ("open", T0)


def test_same_as_of_twice_gives_the_same_rows() -> None:
    opened = advance(None, _cands(("r", "D1", "a"), ("r", "D2", "b")), T0)
    once = advance(opened, _cands(("r", "D1", "a")), T0 + HOUR)
    twice = advance(once, _cands(("r", "D1", "a")), T0 + HOUR)
    assert_frame_equal(once, twice)


def test_as_of_before_the_last_run_is_refused() -> None:
    opened = advance(None, _cands(("r", "D1", "a")), T0)
    with pytest.raises(ValueError, match="only advance forward"):
        advance(opened, NONE, T0 - HOUR)


def test_rows_to_write_skips_old_resolved_delivered_rows() -> None:
    opened = advance(None, _cands(("r", "D1", "a"), ("r", "D2", "b")), T0)
    delivered = opened.with_columns(delivered_at=pl.lit(T0), resolved_delivered_at=pl.lit(T0))
    resolved = advance(delivered, _cands(("r", "D1", "a")), T0 + HOUR)
    later = advance(resolved, _cands(("r", "D1", "a")), T0 + 2 * HOUR)
    chosen = rows_to_write(later, None, T0 + 2 * HOUR)
    assert chosen["subject_id"].to_list() == ["D1"]  # D2 resolved and told an hour ago
    assert rows_to_write(later, None, T0 + 2 * HOUR, evaluated={"other"}).height == 0


@given(
    runs=st.lists(st.sets(st.sampled_from(["D1", "D2", "D3"]), max_size=3), min_size=1, max_size=8)
)
@hyp_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_sequence_of_runs_keeps_one_row_per_occurrence(runs: list[set[str]]) -> None:
    """Against a plain reference: an alert is open exactly for the subjects whose condition
    holds now, and the occurrences of a subject = the runs where its condition switched on."""
    alerts: pl.DataFrame | None = None
    for i, present in enumerate(runs):
        cands = _cands(*(("r", s, f"m{i}") for s in sorted(present)))
        alerts = advance(alerts, cands, T0 + i * HOUR)
    assert alerts is not None
    assert set(alerts.filter(pl.col("status") == "open")["subject_id"]) == runs[-1]
    assert alerts["alert_key"].is_unique().all()
    for subject in ("D1", "D2", "D3"):
        held = [subject in present for present in runs]
        switched_on = sum(
            now and not before for before, now in zip([False, *held[:-1]], held, strict=True)
        )
        assert alerts.filter(pl.col("subject_id") == subject).height == switched_on
