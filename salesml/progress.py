"""Progress reporting without printing from library code.

Library functions take `progress: Progress | None` and call it with a step name and the
fraction done (0..1). The CLI passes a rich bar; flows pass a logger; tests pass nothing.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, float], None]


def report(progress: Progress | None, step: str, fraction: float) -> None:
    """Call `progress` if there is one; fraction is clipped to [0, 1]."""
    if progress is not None:
        progress(step, min(max(fraction, 0.0), 1.0))


def scaled(progress: Progress | None, start: float, end: float) -> Progress | None:
    """A callback that maps a sub-step's 0..1 onto start..end of the parent's bar."""
    if progress is None:
        return None
    parent = progress

    def inner(step: str, fraction: float) -> None:
        parent(step, start + (end - start) * min(max(fraction, 0.0), 1.0))

    return inner
