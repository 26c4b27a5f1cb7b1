"""Run `salesml` in-process and hold it to its one promise about failures (issue 11).

The promise: a command exits 0, or exits non-zero with exactly one non-empty stderr line,
`error: ...`, and never a traceback (only `--debug` shows one). Any suite can reuse it:

    from tests.clihelp import assert_one_line_or_ok, run_cli

    result = run_cli(["validate", "--config", str(config)])
    line = assert_one_line_or_ok(result)      # None when it exited 0, else the error line
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from typer.testing import CliRunner, Result

from salesml.cli import DEBUG_ENV, app

__all__ = ["Result", "assert_one_line_or_ok", "run_cli"]


def run_cli(args: Sequence[str], env: Mapping[str, str | None] | None = None) -> Result:
    """`salesml ARGS` in this process (stdout and stderr apart), without the user's
    SALESML_DEBUG unless `env` sets it."""
    environment: dict[str, str | None] = {DEBUG_ENV: None}
    environment.update(env or {})
    return CliRunner().invoke(app, [str(arg) for arg in args], env=environment)


def assert_one_line_or_ok(result: Result) -> str | None:
    """None if the command exited 0; else its single `error: ...` stderr line.

    Fails when the command let an exception escape (it would reach the user as a traceback),
    printed "Traceback" anywhere, or failed with no stderr line or more than one.
    """
    shown = (
        f"exit code {result.exit_code}\n"
        f"stdout: {result.stdout[-2000:]!r}\nstderr: {result.stderr[-2000:]!r}"
    )
    exception = result.exception
    if exception is not None and not isinstance(exception, SystemExit):
        raise AssertionError(
            f"the command raised {type(exception).__name__}: {exception!s:.300}\n{shown}"
        ) from exception
    assert "Traceback" not in result.stdout + result.stderr, shown
    if result.exit_code == 0:
        return None
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"a failure must print exactly one stderr line\n{shown}"
    assert lines[0].startswith("error: ") and lines[0][len("error: ") :].strip(), shown
    return lines[0]
