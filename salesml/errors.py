"""One reading of an exception for a user: its first line.

Every user-facing failure is one line (README, "Command line"); the sources, the warehouse,
MLflow, the report and the CLI all cut driver and library messages the same way.
"""

from __future__ import annotations


def first_line(exc: BaseException, *, name_if_empty: bool = True) -> str:
    """The first non-blank line of `exc`'s message, stripped; when it has none, the exception's
    type name (or "" with `name_if_empty=False`, for callers that add the name themselves).
    """
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__ if name_if_empty else ""
