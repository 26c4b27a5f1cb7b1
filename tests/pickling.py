"""Pickles as older releases wrote them, for tests that old MLflow models still load."""

from __future__ import annotations

import copyreg
from typing import Any


class PickledByOlderRelease:
    """Pickles like a model object of a class without `__getstate__` (before BaseEstimator):
    `copyreg.__newobj__` and the bare instance `__dict__` as state."""

    def __init__(self, cls: type, state: dict[str, Any]) -> None:
        self.cls, self.state = cls, state

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # pickle checks that __newobj__'s class is the object's
        return self.cls

    def __reduce__(self) -> tuple[Any, ...]:
        return (copyreg.__newobj__, (self.cls,), self.state)
