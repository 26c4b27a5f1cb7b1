"""Rolling origins and the generic backtest loop."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import polars as pl
import pytest

from salesml.backtest import BacktestError, rolling_origins, run_backtest


def test_rolling_origins_are_even_sorted_utc() -> None:
    first = datetime(2024, 1, 1, tzinfo=UTC)
    last = datetime(2024, 1, 5, 2, tzinfo=timezone(timedelta(hours=2)))  # = 2024-01-05 00:00Z
    origins = rolling_origins(first, last, 5)
    assert origins == [datetime(2024, 1, d, tzinfo=UTC) for d in range(1, 6)]
    assert all(o.utcoffset() == timedelta(0) for o in origins)
    assert rolling_origins(first, last, 1) == [datetime(2024, 1, 5, tzinfo=UTC)]


def test_rolling_origins_refuse_bad_input() -> None:
    aware = datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        rolling_origins(datetime(2024, 1, 1), aware, 3)
    with pytest.raises(ValueError, match="after last"):
        rolling_origins(aware + timedelta(days=1), aware, 3)
    with pytest.raises(ValueError, match="n must be"):
        rolling_origins(aware, aware, 0)


def _fit_predict(origin: datetime) -> pl.DataFrame:
    """A fake model: predictions whose error grows with the origin's day."""
    day = origin.day
    return pl.DataFrame({"actual": [1.0, 2.0], "forecast": [1.0 + day, 2.0]})


def _score(predictions: pl.DataFrame) -> dict[str, float]:
    error = (predictions["forecast"] - predictions["actual"]).abs()
    worst = float(error.max())  # type: ignore[arg-type]
    return {"mae": float(error.mean()), "odd": math.nan if worst > 2 else worst}  # type: ignore[arg-type]


def test_run_backtest_collects_metrics_means_and_progress() -> None:
    origins = rolling_origins(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 3, tzinfo=UTC), 3)
    seen: list[tuple[int, int]] = []
    result = run_backtest(
        list(reversed(origins)),
        _fit_predict,
        _score,
        progress=lambda done, total, origin, m: seen.append((done, total)),
        keep_predictions=True,
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert result.per_origin["origin"].to_list() == origins  # sorted
    assert result.per_origin["mae"].to_list() == [0.5, 1.0, 1.5]
    assert result.mean["mae"] == pytest.approx(1.0)
    assert result.mean["odd"] == pytest.approx(1.5)  # NaN origin ignored in the mean
    assert result.predictions is not None and result.predictions.height == 6

    payload = json.loads(result.to_json())
    assert payload["n_origins"] == 3
    assert payload["mean"]["mae"] == pytest.approx(1.0)
    assert payload["per_origin"][2]["odd"] is None  # NaN -> null, still valid JSON
    assert payload["per_origin"][0]["origin"] == "2024-03-01T00:00:00+00:00"


def test_run_backtest_names_the_failing_origin() -> None:
    def broken(origin: datetime) -> pl.DataFrame:
        raise ValueError("too few won deals")

    with pytest.raises(BacktestError, match=r"2024-03-01T00:00:00\+00:00: too few won deals"):
        run_backtest([datetime(2024, 3, 1, tzinfo=UTC)], broken, _score)
