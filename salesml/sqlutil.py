"""SQL text helpers shared by the source reader and the warehouse (DuckDB and PostgreSQL)."""

from __future__ import annotations


def quote_identifier(name: str) -> str:
    """`name` as a double-quoted SQL identifier (`"` doubled), so any table or column name is
    safe in generated SQL; values are never spliced in, they are bound as parameters.
    """
    return '"' + name.replace('"', '""') + '"'
