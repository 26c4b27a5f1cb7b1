"""JSON text from polars values, vectorised: the one encoder for stored lists and structs.

Reason lists (`health_reasons`, `top_factors`, demand `reasons`) and nested warehouse columns are
stored as JSON text. polars' own encoder (`struct.json_encode`) escapes quotes, backslashes and
control characters and keeps unicode, so every value round-trips through `json.loads`; hand-built
`'["' + join + '"]'` strings get control characters and the empty list wrong.
"""

from __future__ import annotations

import polars as pl

_FIELD = "v"


def json_text(value: pl.Expr) -> pl.Expr:
    """One compact JSON document per row (`["a","b"]`, `[]`, `{"k":1}`); a null value stays null.

    Works on list, array and struct expressions (a list of strings is the common case). The
    value is wrapped in a one-field struct, encoded, and the wrapper stripped, so no Python runs
    per row. The result is unnamed: alias it at the call site.
    """
    wrapped = pl.struct(value.alias(_FIELD)).struct.json_encode()
    text = wrapped.str.strip_prefix('{"' + _FIELD + '":').str.strip_suffix("}")
    return pl.when(value.is_null()).then(None).otherwise(text)
