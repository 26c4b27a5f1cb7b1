"""A local HTTP receiver (http.server in a thread) and a local SMTP server (aiosmtpd), started
by the tests that use them; both record what they accepted."""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Receiver:
    """Answers 500 to the first `fail_next` POSTs, then 200; records every request."""

    url: str = ""
    fail_next: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            body["_idempotency_key"] = self.headers.get("Idempotency-Key")
            body["_path"] = self.path
            with receiver.lock:
                receiver.requests.append(body)
                failing = receiver.fail_next > 0
                if failing:
                    receiver.fail_next -= 1
                else:
                    receiver.accepted.append(body)
            self.send_response(500 if failing else 200)
            self.end_headers()
            self.wfile.write(b"boom" if failing else b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def serving_receiver(path: str) -> Iterator[Receiver]:
    """A local HTTP receiver on a free port, at `path`, for the duration of the block."""
    found = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(found))
    found.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving_receiver("/hooks/T0KEN-s3cret") as found:
        yield found


@dataclass
class Mailbox:
    port: int
    messages: list[Any] = field(default_factory=list)


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    box = Mailbox(port)

    class Collect(Message):
        def handle_message(self, message: Any) -> None:
            box.messages.append(message)

    controller = Controller(Collect(), hostname="127.0.0.1", port=port)
    controller.start()
    yield box
    controller.stop()


PG_URL_ENV = "SALESML_TEST_PG_URL"


def _pg_execute(url: str, sql: str) -> None:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(url, autocommit=True) as con, con.cursor() as cur:
        cur.execute(sql)


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty warehouse: a DuckDB file, or a fresh schema of SALESML_TEST_PG_URL (dropped)."""
    if request.param == "duckdb":
        yield f"duckdb:///{tmp_path / 'alerts.duckdb'}"
        return
    base = os.environ.get(PG_URL_ENV)
    if not base:
        pytest.skip(f"set {PG_URL_ENV} to run PostgreSQL tests")
    schema = f"salesml_alerts_{uuid.uuid4().hex[:12]}"
    _pg_execute(base, f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        _pg_execute(base, f'DROP SCHEMA "{schema}" CASCADE')
