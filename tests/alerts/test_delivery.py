"""Delivery against a local HTTP receiver and a local SMTP server: retries, idempotency,
nothing lost or sent twice, secrets only from the environment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from salesml.alerts.delivery import (
    Channel,
    RetryPolicy,
    SmtpChannel,
    WebhookChannel,
    channels,
    deliver,
)
from salesml.alerts.rules import CANDIDATE_SCHEMA
from salesml.alerts.state import advance
from salesml.config import AlertSmtpSettings, AlertsSettings, ConfigError, from_dict
from tests.alerts.conftest import Mailbox, Receiver

T0 = datetime(2024, 6, 10, 9, tzinfo=UTC)
NOW = datetime(2024, 6, 10, 9, 5, tzinfo=UTC)
WAITS: list[float] = []
FAST = RetryPolicy(max_attempts=3, backoff_seconds=0.5, sleep=WAITS.append)


def _opened(*subjects: str) -> pl.DataFrame:
    cands = pl.DataFrame(
        [
            {
                "rule_id": "health_red",
                "kind": "health_red",
                "subject_type": "deal",
                "subject_id": s,
                "severity": "high",
                "message": f"Deal {s} is red",
            }
            for s in subjects
        ],
        schema=CANDIDATE_SCHEMA,
    )
    return advance(None, cands, T0)


def _hook(receiver: Receiver) -> WebhookChannel:
    return WebhookChannel(receiver.url, "ALERT_HOOK", timeout_seconds=5)


def test_receiver_failing_twice_gets_the_alert_once_after_backoff(receiver: Receiver) -> None:
    receiver.fail_next = 2
    WAITS.clear()
    out = deliver(_opened("D1"), [_hook(receiver)], NOW, policy=FAST)
    assert len(receiver.requests) == 3 and len(receiver.accepted) == 1
    assert WAITS == [0.5, 1.0]  # backoff doubles
    body = receiver.accepted[0]
    key = out["alert_key"][0]
    assert body["text"] == "[high] Deal D1 is red"
    assert body["id"] == body["_idempotency_key"] == f"{key}.opened"
    assert out["delivered_at"].to_list() == [NOW]
    # the next run has nothing to send
    again = deliver(out, [_hook(receiver)], NOW + timedelta(hours=1), policy=FAST)
    assert len(receiver.requests) == 3
    assert again["delivered_at"].to_list() == [NOW]


def test_failure_beyond_retries_stays_pending_and_goes_next_run(receiver: Receiver) -> None:
    receiver.fail_next = 3
    failed = deliver(_opened("D1"), [_hook(receiver)], NOW, policy=FAST)
    row = failed.row(0, named=True)
    assert row["delivered_at"] is None and row["attempts"] == 1
    assert "500" in row["last_error"] and "T0KEN" not in row["last_error"]
    later = NOW + timedelta(hours=1)
    done = deliver(failed, [_hook(receiver)], later, policy=FAST)
    assert done["delivered_at"].to_list() == [later]
    assert len(receiver.accepted) == 1


def test_a_dead_receiver_costs_one_retry_cycle_per_run(receiver: Receiver) -> None:
    receiver.fail_next = 100
    out = deliver(_opened("D1", "D2", "D3"), [_hook(receiver)], NOW, policy=FAST)
    assert len(receiver.requests) == FAST.max_attempts  # D2 and D3 wait for the next run
    assert out["delivered_at"].null_count() == 3 and out["attempts"].to_list() == [1, 1, 1]
    receiver.fail_next = 0
    done = deliver(out, [_hook(receiver)], NOW + timedelta(hours=1), policy=FAST)
    assert done["delivered_at"].null_count() == 0 and len(receiver.accepted) == 3


def test_resolution_follows_the_opening_and_each_is_sent_once(receiver: Receiver) -> None:
    told = deliver(_opened("D1"), [_hook(receiver)], NOW, policy=FAST)
    resolved = advance(told, pl.DataFrame(schema=CANDIDATE_SCHEMA), T0 + timedelta(hours=1))
    after = deliver(resolved, [_hook(receiver)], NOW + timedelta(hours=1), policy=FAST)
    ids = [b["id"] for b in receiver.accepted]
    key = told["alert_key"][0]
    assert ids == [f"{key}.opened", f"{key}.resolved"]
    assert receiver.accepted[1]["text"] == "Resolved: Deal D1 is red"
    assert after["resolved_delivered_at"].to_list() == [NOW + timedelta(hours=1)]
    deliver(after, [_hook(receiver)], NOW + timedelta(hours=2), policy=FAST)
    assert len(receiver.accepted) == 2


def test_email_through_local_smtp_with_a_stable_message_id(smtp_server: Mailbox) -> None:
    smtp = AlertSmtpSettings.model_validate(
        {
            "host": "127.0.0.1",
            "port": smtp_server.port,
            "from": "salesml@example.com",
            "to": ["rep@example.com"],
        }
    )
    out = deliver(_opened("D1", "D2"), [SmtpChannel(smtp, None)], NOW, policy=FAST)
    assert out["delivered_at"].to_list() == [NOW, NOW]
    ids = sorted(m["Message-ID"] for m in smtp_server.messages)
    assert ids == sorted(f"<{k}.opened@salesml.alerts>" for k in out["alert_key"])
    assert smtp_server.messages[0]["To"] == "rep@example.com"
    assert "Deal D" in smtp_server.messages[0]["Subject"]


def test_one_channel_failing_does_not_resend_on_the_other(
    receiver: Receiver, smtp_server: Mailbox
) -> None:
    smtp = AlertSmtpSettings.model_validate(
        {
            "host": "127.0.0.1",
            "port": smtp_server.port,
            "from": "a@example.com",
            "to": ["b@example.com"],
        }
    )
    receiver.fail_next = 3  # the webhook fails the whole first run
    both: list[Channel] = [_hook(receiver), SmtpChannel(smtp, None)]
    first = deliver(_opened("D1"), both, NOW, policy=FAST)
    assert first["delivered_at"].to_list() == [None] and len(smtp_server.messages) == 1
    second = deliver(first, both, NOW + timedelta(hours=1), policy=FAST)
    assert second["delivered_at"].to_list() == [NOW + timedelta(hours=1)]
    assert len(smtp_server.messages) == 1 and len(receiver.accepted) == 1


def test_secrets_come_from_the_environment_named_in_the_yaml() -> None:
    settings = from_dict(
        {
            "alerts": {
                "webhook": {"url_env": "HOOK_URL"},
                "smtp": {
                    "host": "h",
                    "from": "a@b",
                    "to": ["c@d"],
                    "username": "u",
                    "password_env": "SMTP_PW",
                },
            }
        }
    )
    assert "s3cret" not in settings.to_yaml()
    found = channels(settings.alerts, {"HOOK_URL": "http://x/hooks/s3cret", "SMTP_PW": "pw-s3cret"})
    assert [c.name for c in found] == ["webhook", "email"]
    with pytest.raises(ConfigError, match=r"alerts\.smtp\.password_env.*SMTP_PW"):
        channels(settings.alerts, {"HOOK_URL": "http://x/hooks/s3cret"})
    assert channels(AlertsSettings(), {}) == []  # delivery off by default
    with pytest.raises(ConfigError, match=r"alerts\.webhook"):  # no place for the URL itself
        from_dict({"alerts": {"webhook": {"url": "http://x/hooks/s3cret"}}})
