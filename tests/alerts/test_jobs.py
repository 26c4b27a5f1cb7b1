"""process_alerts over a DuckDB warehouse and a local webhook receiver: hourly runs where a
deal turns red at the second run and recovers later -> one alert, opened once, delivered once,
resolved; a failed delivery is retried on the next run; no secret is stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from salesml.alerts.jobs import process_alerts, read_alerts
from salesml.alerts.rules import AlertFrames
from salesml.config import AlertsSettings, AlertWebhookSettings, ConfigError, Settings
from salesml.warehouse import Warehouse
from tests.alerts.conftest import Receiver

T0 = datetime(2024, 6, 10, 9, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _scores(health: str, p: float, before: str = "green") -> AlertFrames:
    """This run's scores of D1 (health, p) and D2 (green), and the previous run's: D1 `before`."""
    frame = pl.DataFrame(
        {"deal_id": ["D1", "D2"], "win_probability": [p, 0.7], "health": [health, "green"]}
    )
    previous = frame.with_columns(pl.Series("health", [before, "green"]))
    return AlertFrames(deal_scores=frame, previous_deal_scores=previous)


def _run(settings: Settings, receiver: Receiver, frames: AlertFrames, as_of: datetime) -> object:
    env = {"SALESML_TEST_HOOK": receiver.url}
    warehouse = Warehouse.from_settings(settings)
    return process_alerts(
        settings, warehouse, frames, as_of, f"run-{as_of:%H}", environ=env, clock=lambda: as_of
    )


@pytest.fixture
def alert_settings(settings: Settings) -> Settings:
    settings = settings.model_copy(
        update={
            "alerts": AlertsSettings(
                webhook=AlertWebhookSettings(url_env="SALESML_TEST_HOOK"),
                max_attempts=2,
                backoff_seconds=0,
            )
        }
    )
    return settings


def test_deal_turning_red_then_recovering(
    alert_settings: Settings, receiver: Receiver, warehouse_url: str
) -> None:
    alert_settings = alert_settings.model_copy(
        update={"warehouse": alert_settings.warehouse.model_copy(update={"url": warehouse_url})}
    )  # DuckDB, and PostgreSQL when configured
    _run(alert_settings, receiver, _scores("green", 0.6), T0)
    receiver.fail_next = 1  # the first try of the opening notice fails
    opened = _run(alert_settings, receiver, _scores("red", 0.1), T0 + HOUR)
    kept = _run(alert_settings, receiver, _scores("red", 0.08, before="red"), T0 + 2 * HOUR)
    resolved = _run(alert_settings, receiver, _scores("green", 0.6, before="red"), T0 + 3 * HOUR)
    assert (opened.opened, kept.still_open, resolved.resolved) == (1, 1, 1)  # type: ignore[attr-defined]
    stored = read_alerts(Warehouse.from_settings(alert_settings))
    assert stored is not None and stored.height == 1
    row = stored.row(0, named=True)
    assert (row["status"], row["subject_id"], row["kind"]) == ("resolved", "D1", "health_red")
    assert (row["first_seen_as_of"], row["last_seen_as_of"]) == (T0 + HOUR, T0 + 2 * HOUR)
    assert (row["delivered_at"], row["resolved_delivered_at"]) == (T0 + HOUR, T0 + 3 * HOUR)
    assert row["run_id"] == "run-12"
    ids = [body["id"] for body in receiver.accepted]
    assert ids == [f"{row['alert_key']}.opened", f"{row['alert_key']}.resolved"]
    assert "T0KEN" not in str(stored.to_dicts())  # the webhook token is never stored


def test_undelivered_alert_is_sent_on_the_next_run(
    alert_settings: Settings, receiver: Receiver
) -> None:
    receiver.fail_next = 2  # both tries of the run fail
    _run(alert_settings, receiver, _scores("red", 0.1), T0)
    stored = read_alerts(Warehouse.from_settings(alert_settings))
    assert stored is not None
    assert stored["delivered_at"].to_list() == [None]  # written first, not yet delivered
    assert stored["attempts"].to_list() == [1]
    _run(alert_settings, receiver, _scores("red", 0.1), T0 + HOUR)
    _run(alert_settings, receiver, _scores("red", 0.1), T0 + 2 * HOUR)
    assert len(receiver.accepted) == 1
    stored = read_alerts(Warehouse.from_settings(alert_settings))
    assert stored is not None and stored["delivered_at"].to_list() == [T0 + HOUR]


def test_unset_secret_stops_before_anything_is_written(
    alert_settings: Settings, receiver: Receiver
) -> None:
    warehouse = Warehouse.from_settings(alert_settings)
    with pytest.raises(ConfigError, match="SALESML_TEST_HOOK"):
        process_alerts(alert_settings, warehouse, _scores("red", 0.1), T0, "r1", environ={})
    assert read_alerts(warehouse) is None


def test_without_a_channel_alerts_are_kept_but_not_sent(settings: Settings) -> None:
    warehouse = Warehouse.from_settings(settings)
    outcome = process_alerts(settings, warehouse, _scores("red", 0.1), T0, "r1", environ={})
    stored = read_alerts(warehouse)
    assert outcome.opened == 1 and outcome.notices_pending == 0
    assert stored is not None and stored["status"].to_list() == ["open"]


def test_crash_before_recording_resends_with_the_same_id(
    alert_settings: Settings, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documented crash window: sent, then the process dies before the second write."""
    real_write = Warehouse.write_batch
    calls: list[int] = []

    def dies_on_second_write(self: Warehouse, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real_write(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Warehouse, "write_batch", dies_on_second_write)
    with pytest.raises(KeyboardInterrupt):
        _run(alert_settings, receiver, _scores("red", 0.1), T0)
    monkeypatch.setattr(Warehouse, "write_batch", real_write)
    _run(alert_settings, receiver, _scores("red", 0.1), T0 + HOUR)
    ids = [body["id"] for body in receiver.accepted]
    assert len(ids) == 2 and ids[0] == ids[1]  # at least once; the receiver can drop the repeat
    _run(alert_settings, receiver, _scores("red", 0.1), T0 + 2 * HOUR)
    assert len(receiver.accepted) == 2
