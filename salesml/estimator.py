"""Estimators built from settings: one set of names and defaults for config and model.

An estimator's hyper-parameters are its `__init__` arguments (scikit-learn's contract); the
settings section of that model declares the same names with the same defaults (tests check).
`params_from_settings` reads them by name, so a new hyper-parameter needs no mapping code, and
a parameter the settings lack fails loudly instead of silently taking the estimator's default.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel


def settings_values(section: BaseModel) -> Iterator[tuple[str, Any]]:
    """(name, value) of every field of `section` and of its nested sections (sub-models are
    walked, not returned; dicts and lists are values), in declaration order.
    """
    for name in type(section).model_fields:
        value = getattr(section, name)
        if isinstance(value, BaseModel):
            yield from settings_values(value)
        else:
            yield name, value


def params_from_settings(
    estimator: type,
    section: BaseModel,
    *,
    renames: Mapping[str, str] | None = None,
    **given: Any,
) -> dict[str, Any]:
    """The `__init__` arguments of `estimator` taken by name from `section` (nested sections
    included; lists become tuples, as estimators keep immutable values).

    `renames`: settings name -> parameter name where they differ. `given`: parameters that are
    data rather than settings (e.g. a learned feature spec); they win over settings. Raises
    ValueError naming a parameter found in neither, or found twice with different values.
    """
    names = [
        p.name
        for p in inspect.signature(estimator).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    renames = renames or {}
    found: dict[str, Any] = {}
    for key, value in settings_values(section):
        name = renames.get(key, key)
        if name not in names or name in given:
            continue
        given_value = tuple(value) if isinstance(value, list) else value
        if name in found and found[name] != given_value:
            raise ValueError(
                f"{type(section).__name__}: {name} is set twice with different values "
                f"({found[name]!r}, {given_value!r}); {estimator.__name__} needs one"
            )
        found[name] = given_value
    missing = [n for n in names if n not in found and n not in given]
    if missing:
        raise ValueError(
            f"{type(section).__name__} has no setting for {estimator.__name__}'s "
            f"parameter(s) {', '.join(missing)}"
        )
    return {name: given.get(name, found.get(name)) for name in names}
