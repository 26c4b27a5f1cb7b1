"""The CLI's promise, as the hostile suites check it: `tests.clihelp` plus a length limit.

`tests.clihelp.assert_one_line_or_ok` holds a command to exit 0, or to fail with exactly one
`error: ...` stderr line and no traceback. Hostile input adds one more way to break that promise:
an error line that echoes a 100 000-character value is a dump, not a line.
"""

from __future__ import annotations

from tests.clihelp import Result, assert_one_line_or_ok, run_cli

__all__ = ["MAX_ERROR_CHARS", "Result", "error_line", "run_cli"]

MAX_ERROR_CHARS = 5000


def error_line(result: Result) -> str | None:
    """None when the command exited 0, else its single, bounded `error: ...` line."""
    line = assert_one_line_or_ok(result)
    if line is not None:
        assert len(line) <= MAX_ERROR_CHARS, f"an error line of {len(line)} characters"
    return line
