"""Alert delivery: a Slack-compatible webhook and SMTP email, with retries and idempotency.

The outbox rule (`salesml.alerts.jobs.process_alerts`): an alert row is written and committed
first; only then are its notices sent, and each confirmed send is recorded in the row
(`deliveries`, then `delivered_at` / `resolved_delivered_at` once every channel has it). A
notice not confirmed is tried again on the next run, so none is lost. A notice confirmed by a
channel is never sent to that channel again, so none is sent twice, except in one crash window:
a process killed after a channel accepted a notice and before the warehouse recorded it sends
that notice again next run. For that case every notice carries a stable id (`notice_id`: the
JSON field `id` and the `Idempotency-Key` header of the webhook, the email's `Message-ID`), so
a receiver can drop the repeat.

Secrets (the webhook URL with its token, the SMTP password) are read from the environment
variables the YAML names, when delivering; they are never stored or shown (errors name the
variable, not the value).
"""

from __future__ import annotations

import json
import os
import smtplib
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any, Protocol

import polars as pl

from salesml import secrets
from salesml.alerts.state import RESOLVED, pending
from salesml.config import AlertSmtpSettings, AlertsSettings, AlertWebhookSettings, ConfigError
from salesml.errors import first_line
from salesml.timeutil import DATETIME

OPENED, RESOLVED_NOTICE = "opened", "resolved"


@dataclass(frozen=True)
class Notice:
    """One message about one alert: it opened, or it resolved."""

    alert_key: str
    event: str
    severity: str
    message: str

    @property
    def notice_id(self) -> str:
        """Stable across runs and retries: the receiver's de-duplication key."""
        return f"{self.alert_key}.{self.event}"

    @property
    def text(self) -> str:
        """One line for humans: 'Resolved: ...' or '[severity] message'."""
        if self.event == RESOLVED_NOTICE:
            return f"Resolved: {self.message}"
        return f"[{self.severity}] {self.message}"


class Channel(Protocol):
    """Sends one notice or raises; `name` is how `deliveries` records it."""

    name: str

    def send(self, notice: Notice) -> None:
        """Deliver `notice`, or raise (the message must not carry secrets)."""


class WebhookChannel:
    """POST {"text", "id", "alert_key", "event", "severity"} as JSON (Slack reads `text`)."""

    name = "webhook"

    def __init__(self, url: str, url_env: str, timeout_seconds: float = 10.0) -> None:
        self.url = url
        self.url_env = url_env
        self.timeout_seconds = timeout_seconds

    def send(self, notice: Notice) -> None:
        """POST `notice` to the webhook; an HTTP error or network failure raises (URL masked)."""
        body = {
            "text": notice.text,
            "id": notice.notice_id,
            "alert_key": notice.alert_key,
            "event": notice.event,
            "severity": notice.severity,
        }
        request = urllib.request.Request(
            self.url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Idempotency-Key": notice.notice_id},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                response.read()
        except Exception as exc:  # the URL (with its token) must not reach the message
            reason = first_line(exc).replace(self.url, f"${{{self.url_env}}}")
            raise RuntimeError(f"webhook ({self.url_env}): {reason}") from None


class SmtpChannel:
    """One email per notice, `Message-ID` = <notice_id@salesml.alerts>."""

    name = "email"

    def __init__(self, settings: AlertSmtpSettings, password: str | None) -> None:
        self.settings = settings
        self._password = password

    def send(self, notice: Notice) -> None:
        """Mail `notice` through the configured SMTP server; a failure raises."""
        smtp = self.settings
        email = EmailMessage()
        email["Subject"] = f"salesml alert: {notice.text}"[:200]
        email["From"] = smtp.from_address
        email["To"] = ", ".join(smtp.to)
        email["Message-ID"] = f"<{notice.notice_id}@salesml.alerts>"
        email.set_content(f"{notice.text}\n\nalert {notice.alert_key} ({notice.event})\n")
        try:
            with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_seconds) as client:
                if smtp.starttls:
                    client.starttls()
                if smtp.username:
                    client.login(smtp.username, self._password or "")
                client.send_message(email)
        except Exception as exc:
            raise RuntimeError(f"smtp {smtp.host}:{smtp.port}: {first_line(exc)}") from None


def _secret(variable: str, key: str, environ: Mapping[str, str]) -> str:
    value = environ.get(variable)
    if not value:
        raise ConfigError(f"config key '{key}' names the environment variable {variable}, unset")
    secrets.remember(value)  # masked in any text that might carry it
    return value


def channels(settings: AlertsSettings, environ: Mapping[str, str] | None = None) -> list[Channel]:
    """The configured channels (none: delivery is off); secrets read from the environment."""
    env = os.environ if environ is None else environ
    found: list[Channel] = []
    hook: AlertWebhookSettings | None = settings.webhook
    if hook is not None:
        url = _secret(hook.url_env, "alerts.webhook.url_env", env)
        found.append(WebhookChannel(url, hook.url_env, hook.timeout_seconds))
    if settings.smtp is not None:
        variable = settings.smtp.password_env
        password = _secret(variable, "alerts.smtp.password_env", env) if variable else None
        found.append(SmtpChannel(settings.smtp, password))
    return found


@dataclass(frozen=True)
class RetryPolicy:
    """Tries per notice and channel within one run; waits backoff, 2 x backoff, ..."""

    max_attempts: int = 4
    backoff_seconds: float = 1.0
    sleep: Callable[[float], None] = time.sleep


def _try(channel: Channel, notice: Notice, policy: RetryPolicy) -> str | None:
    """Send with retries; None on success, else the last failure (redacted, one line)."""
    error = ""
    for attempt in range(policy.max_attempts):
        if attempt:
            policy.sleep(policy.backoff_seconds * 2 ** (attempt - 1))
        try:
            channel.send(notice)
            return None
        except Exception as exc:
            error = secrets.redact(first_line(exc))
    return error


def deliver(
    alerts: pl.DataFrame,
    to: Sequence[Channel],
    now: datetime,
    *,
    policy: RetryPolicy | None = None,
    notify_resolved: bool = True,
) -> pl.DataFrame:
    """`alerts` with the pending notices sent and recorded (deliveries, delivered_at,
    resolved_delivered_at at `now`, wall time; attempts and last_error on failure).

    The opening notice goes before the resolution on each channel; a channel that has not
    confirmed the opening does not get the resolution yet. A channel that failed all its tries
    once is not tried again in this run (a dead receiver costs one retry cycle per run, not
    one per alert); its notices wait for the next run. No channel: nothing changes.
    """
    if not to or alerts.height == 0:
        return alerts
    policy = policy or RetryPolicy()
    opening, resolution = pending(notify_resolved)
    todo = alerts.filter(opening | resolution)
    if todo.height == 0:
        return alerts
    down: set[str] = set()
    updates = [
        _deliver_one(row, to, now, policy, notify_resolved, down)
        for row in todo.iter_rows(named=True)
    ]
    done = pl.DataFrame(updates, schema=_UPDATE_SCHEMA)
    return alerts.update(done, on="alert_key", include_nulls=True)


_UPDATE_SCHEMA: dict[str, pl.DataType] = {
    "alert_key": pl.String(),
    "deliveries": pl.String(),
    "delivered_at": DATETIME,
    "resolved_delivered_at": DATETIME,
    "attempts": pl.Int64(),
    "last_error": pl.String(),
}


def _deliver_one(
    row: dict[str, Any],
    to: Sequence[Channel],
    now: datetime,
    policy: RetryPolicy,
    notify_resolved: bool,
    down: set[str],
) -> dict[str, Any]:
    """Send one alert's pending notices on every channel that lacks them (an IO loop); a
    channel that fails is added to `down` and skipped for the rest of the run.
    """
    sent: dict[str, dict[str, str]] = json.loads(row["deliveries"] or "{}")
    events = [OPENED]
    if notify_resolved and row["status"] == RESOLVED:
        events.append(RESOLVED_NOTICE)
    errors: list[str] = []
    for channel in to:
        done = sent.setdefault(channel.name, {})
        for event in events:
            if event in done:
                continue
            if channel.name in down:
                errors.append(f"{channel.name}: not tried, it failed earlier in this run")
                break
            notice = Notice(row["alert_key"], event, row["severity"], row["message"])
            error = _try(channel, notice, policy)
            if error is not None:
                errors.append(error)
                down.add(channel.name)
                break  # not the resolution before the opening
            done[event] = now.isoformat()
    everywhere = {e for e in events if all(e in sent.get(c.name, {}) for c in to)}
    return {
        "alert_key": row["alert_key"],
        "deliveries": json.dumps(sent, sort_keys=True),
        "delivered_at": row["delivered_at"] or (now if OPENED in everywhere else None),
        "resolved_delivered_at": row["resolved_delivered_at"]
        or (now if RESOLVED_NOTICE in everywhere else None),
        "attempts": (row["attempts"] or 0) + (1 if errors else 0),
        "last_error": "; ".join(errors) if errors else row["last_error"],
    }
