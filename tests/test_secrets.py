"""Secrets are masked in every form a password can take, in any text (issue 11, item 4)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import unquote

import pytest

from salesml import secrets
from salesml.secrets import MASK, passwords, redact, redact_url, remember

# (url, the password it holds, what must remain readable around it)
PASSWORD_FORMS = [
    ("postgresql://app:hunter2@db/sales", "hunter2", "postgresql://app:***@db/sales"),
    ("postgresql://app:hun/ter2@db/sales", "hun/ter2", "postgresql://app:***@db/sales"),
    ("postgresql://:hunter2@db/sales", "hunter2", "postgresql://:***@db/sales"),
    (
        "postgresql://app@db/sales?password=hunter2",
        "hunter2",
        "postgresql://app@db/sales?password=***",
    ),
    (
        "postgresql://app@db/sales?sslmode=require&PASSWORD=hunter2&x=1",
        "hunter2",
        "postgresql://app@db/sales?sslmode=require&PASSWORD=***&x=1",
    ),
    ("postgresql://app:p@ss:word@db/sales", "p@ss:word", "postgresql://app:***@db/sales"),
    ("postgresql://app:se/cret@db/sales", "se/cret", "postgresql://app:***@db/sales"),
    ("postgresql://app:p?ss@db/x?user=a@b", "p?ss", "postgresql://app:***@db/x?user=a@b"),
    (
        "postgresql+psycopg://app:pw%40x@db:5432/s",
        "pw%40x",
        "postgresql+psycopg://app:***@db:5432/s",
    ),
    ("http://user:tok3n@mlflow:5000/", "tok3n", "http://user:***@mlflow:5000/"),
    ("postgresql://db/x?password=p@ss", "p@ss", "postgresql://db/x?password=***"),
]


@pytest.mark.parametrize(("url", "password", "shown"), PASSWORD_FORMS)
def test_every_password_form_is_masked(url: str, password: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert password not in redact(f"error: cannot connect to '{url}' (retry later)")
    assert password in passwords(url)


@pytest.mark.parametrize(
    "url",
    [
        "duckdb:///out/warehouse.duckdb",
        "sqlite:///out/mlflow.db",
        "postgresql://app@db:5432/sales?sslmode=require",
        "file:///tmp/mlruns",
    ],
)
def test_urls_without_password_are_untouched(url: str) -> None:
    assert redact(url) == url
    assert passwords(url) == []


def test_keyword_connection_string_is_masked() -> None:
    assert redact("host=db password=hunter2 user=app") == "host=db password=*** user=app"
    assert redact("host=db password='a b c' user=app") == "host=db password=*** user=app"
    assert passwords("host=db sslpassword=k3y") == ["k3y"]


def test_userinfo_reading_is_at_least_as_wide_as_sqlalchemy() -> None:
    """Where make_url reads a password, the mask covers it too (the wide reading contains it)."""
    from sqlalchemy.engine.url import make_url

    for url, _, _ in PASSWORD_FORMS:
        try:
            read = make_url(url).password
        except ValueError:  # p@ss:word: SQLAlchemy cannot read it at all
            continue
        if read:
            assert str(read) not in unquote(redact_url(url)), url


def test_remembered_values_are_masked_in_any_text() -> None:
    remember("se/cret-4711")
    text = redact("driver said: bad password se/cret-4711 (encoded se%2Fcret-4711)")
    assert "se/cret-4711" not in text
    assert "se%2Fcret-4711" not in text
    assert text.count(MASK) == 2


def test_short_values_are_not_remembered() -> None:
    remember("ab")
    assert redact("ab cab") == "ab cab"


def test_remember_is_safe_while_another_thread_redacts() -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        adds = pool.map(remember, [f"thread-secret-{i:04d}" for i in range(300)])
        shown = pool.map(redact, [f"x thread-secret-{i:04d} y" for i in range(300)])
        list(adds)
        assert all(text.startswith("x ") for text in shown)
    assert redact("thread-secret-0299") == MASK


def test_warehouse_display_masks_every_form() -> None:
    from salesml.warehouse import Warehouse

    for url, password, _ in PASSWORD_FORMS[:8]:
        if url.startswith("postgresql://"):
            assert password not in repr(Warehouse(url.replace("@db", "@127.0.0.1:1")))


def test_connection_error_does_not_show_env_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11: a ${PGPW} holding se/cret was printed by the connection error."""
    from salesml import sources
    from salesml.config import from_dict
    from salesml.validation import DataValidationError

    monkeypatch.setenv("H1_PGPW", "se/cret-conn")
    settings = from_dict({"sources": {"url": "postgresql://app:${H1_PGPW}@127.0.0.1:1/sales"}})
    with pytest.raises(DataValidationError, match="cannot connect to PostgreSQL") as err:
        sources.read("deals", settings, datetime(2025, 1, 1, tzinfo=UTC))
    message = str(err.value)
    assert "\n" not in message
    for fragment in ("se/cret-conn", "se%2Fcret-conn", '"se"'):
        assert fragment not in message
    assert secrets.redact(settings.sources.url) == "postgresql://app:***@127.0.0.1:1/sales"
