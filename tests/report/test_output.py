"""`report --out` never replaces an input, and a report is written whole (issue 11).

Also the regression of a report after earlier scores that left young deals unscored: those
rows have no probability and must not reach the calibration plot.
"""

from __future__ import annotations

import os
import stat
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml

from salesml.config import Settings
from salesml.report import build
from salesml.report.output import (
    MARKER,
    ReportPathError,
    check_out_path,
    is_own_report,
    write_atomic,
)
from salesml.sources import duckdb_path
from tests.clihelp import assert_one_line_or_ok, run_cli
from tests.report.synthetic import AS_OF, PAST_AS_OF, make_world, settings_for, write_world


def _config(settings: Settings, folder: Path) -> Path:
    path = folder / "salesml.yaml"
    raw = {
        "sources": {"path": str(settings.sources.path)},
        "warehouse": {"url": settings.warehouse.url},
        "mlflow": {"tracking_uri": settings.mlflow.tracking_uri},
        "timezone": "UTC",
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def _report(config: Path, out: Path, *extra: str) -> tuple[int, str | None]:
    result = run_cli(
        ["report", "--config", str(config), "--as-of", AS_OF.isoformat(), "--out", str(out), *extra]
    )
    return result.exit_code, assert_one_line_or_ok(result)


@pytest.mark.parametrize(
    "target",
    [
        "warehouse",
        "warehouse wal",
        "deal table",
        "new file in sources",
        "config",
        "mlflow db",
        "mlflow artifact",
    ],
)
@pytest.mark.parametrize("force", [False, True])
def test_report_out_never_replaces_an_input_even_with_force(
    warehouse_settings: Settings, tmp_path: Path, target: str, force: bool
) -> None:
    config = _config(warehouse_settings, tmp_path)
    data = warehouse_settings.sources.path
    assert data is not None
    db = duckdb_path(warehouse_settings.warehouse.url)
    mlflow_db = Path(warehouse_settings.mlflow.tracking_uri.removeprefix("sqlite:///"))
    path = {
        "warehouse": db,
        "warehouse wal": db.with_name(db.name + ".wal"),
        "deal table": data / "deals.parquet",
        "new file in sources": data / "report.html",
        "config": config,
        "mlflow db": mlflow_db,
        "mlflow artifact": mlflow_db.parent / "mlartifacts" / "1" / "report.html",
    }[target]
    before = path.read_bytes() if path.exists() else None
    code, line = _report(config, path, *(["--force"] if force else []))
    assert code == 1
    assert line is not None and "which a report must never replace; choose another" in line
    assert (path.read_bytes() if path.exists() else None) == before


def test_links_to_an_input_are_refused(warehouse_settings: Settings, tmp_path: Path) -> None:
    db = duckdb_path(warehouse_settings.warehouse.url)
    symlink, hardlink = tmp_path / "soft.html", tmp_path / "hard.html"
    symlink.symlink_to(db)
    os.link(db, hardlink)
    for link in (symlink, hardlink):
        with pytest.raises(ReportPathError, match="the warehouse"):
            check_out_path(link, warehouse_settings, force=True)


def test_a_folder_or_a_file_in_the_way_is_one_line(
    warehouse_settings: Settings, tmp_path: Path
) -> None:
    config = _config(warehouse_settings, tmp_path)
    code, line = _report(config, tmp_path)
    assert code == 1 and line == (
        f"error: report --out {tmp_path} is a folder; give a file name, e.g. "
        f"{tmp_path / 'report.html'}"
    )
    (tmp_path / "plain").write_text("x")
    code, line = _report(config, tmp_path / "plain" / "deeper" / "r.html")
    assert code == 1 and line is not None and "plain is a file, not a folder" in line
    with pytest.raises(ReportPathError, match="is a file, not a folder"):
        write_atomic(tmp_path / "plain" / "r.html", "<html>")


def test_an_existing_file_is_replaced_only_if_it_is_a_report_or_forced(
    warehouse_settings: Settings, tmp_path: Path
) -> None:
    config = _config(warehouse_settings, tmp_path)
    notes = tmp_path / "notes.html"
    notes.write_text("my notes")
    code, line = _report(config, notes)
    assert code == 1 and line is not None and "not a salesml report" in line and "--force" in line
    assert notes.read_text() == "my notes"
    code, _ = _report(config, notes, "--force")
    assert code == 0
    page = notes.read_text()
    assert MARKER in page and is_own_report(notes)
    # now it is salesml's own report: replaced again without --force
    assert check_out_path(notes, warehouse_settings) == notes


def test_reports_without_the_marker_from_older_versions_are_recognised(tmp_path: Path) -> None:
    old = tmp_path / "old.html"
    old.write_text(
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        "<title>salesml report · as of 2025-07-01 00:00 UTC</title>"
    )
    assert is_own_report(old)
    assert not is_own_report(tmp_path / "missing.html")


def test_write_is_atomic_and_keeps_normal_permissions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.html"
    write_atomic(path, "first")
    assert path.read_text() == "first"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask

    def broken(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, "second")
    assert path.read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


def test_report_after_scores_that_left_young_deals_unscored(tmp_path: Path) -> None:
    """score deals --as-of 2025-06-20, then report --as-of 2025-07-01: deals that were "not
    scored, open < 2 days" and have closed since must not enter the calibration plot."""
    world = make_world(n_open=10, n_closed=30, n_series=2, horizon=12)
    past = world.outputs[PAST_AS_OF]["deal_scores"]
    young = pl.col("deal_id").is_in(["C00000", "C00001", "C00002"])
    world.outputs[PAST_AS_OF]["deal_scores"] = past.with_columns(
        pl.when(young).then(None).otherwise(pl.col("win_probability")).alias("win_probability"),
        pl.when(young).then(None).otherwise(pl.col("health")).alias("health"),
        pl.when(young).then(pl.lit("open less than 2 days")).alias("not_scored_reason"),
    )
    settings = write_world(world, tmp_path)
    assert settings == settings_for(tmp_path)
    page = build(settings, AS_OF, tmp_path / "r.html").read_text()
    assert "Calibration: past scores against what happened" in page
    assert "27 predictions made" in page
    # an earlier as_of sees the same rule
    build(settings, AS_OF - timedelta(days=5), tmp_path / "earlier.html")
