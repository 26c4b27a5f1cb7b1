"""Reading the database URLs of the config (`sources.url`, `warehouse.url`): one parser.

Forms: `duckdb:///rel/file.duckdb` (a path relative to the cwd), `duckdb:////abs/file.duckdb`,
and `postgresql://...` / `postgres://...`, optionally with a SQLAlchemy driver
(`postgresql+psycopg://...`). Pure string work, no IO.
"""

from __future__ import annotations

from pathlib import Path

POSTGRES_DIALECTS = ("postgresql", "postgres")


def split_url(url: str) -> tuple[str, str]:
    """(scheme lower-cased with any `+driver`, the rest after `://`); ("", url) without `://`."""
    if "://" not in url:
        return "", url
    scheme, rest = url.split("://", 1)
    return scheme.lower(), rest


def dialect(url: str) -> str:
    """The scheme without its driver: `postgresql+psycopg://...` -> `postgresql`."""
    return split_url(url)[0].split("+", 1)[0]


def duckdb_path(url: str) -> Path:
    """`duckdb:///rel/file.duckdb` -> rel/file.duckdb; `duckdb:////abs/file.duckdb` -> /abs/..."""
    rest = split_url(url)[1]
    return Path(rest[1:] if rest.startswith("/") else rest)


def postgres_uri(url: str) -> str:
    """Libpq URI (what ADBC and psycopg take): `postgresql+psycopg://...` and `postgres://...`
    become `postgresql://...`; a URL of another dialect is returned as it is.
    """
    if dialect(url) not in POSTGRES_DIALECTS:
        return url
    return "postgresql://" + split_url(url)[1]
