"""write_sample: Parquet per table (written chunk by chunk), the truth folder, the CLI entry."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from salesml.sample import WORLD_END, deals_world, demand_world, write_sample
from salesml.sample import deals as deals_module
from salesml.sample import demand as demand_module
from salesml.sample.__main__ import main
from salesml.sample.write import SampleFolderError

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED = REPO_ROOT / "data" / "sample"


def test_chunked_files_equal_the_in_memory_worlds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small chunks so the writer appends several row groups per file.
    monkeypatch.setattr(deals_module, "CHUNK_DEALS", 70)
    monkeypatch.setattr(demand_module, "CHUNK_SERIES", 6)
    seen: list[tuple[str, float]] = []
    paths = write_sample(
        tmp_path,
        deals=300,
        series=20,
        days=14,
        deal_days=200,
        seed=5,
        progress=lambda step, fraction: seen.append((step, fraction)),
    )
    deal_tables, deal_truth = deals_world(n_deals=300, days=200, seed=5)
    demand_tables, demand_truth = demand_world(n_series=20, days=14, seed=5)
    for name, frame in {**deal_tables, **demand_tables}.items():
        assert paths[name] == tmp_path / f"{name}.parquet"
        assert pl.read_parquet(paths[name]).equals(frame), name
    assert pl.read_parquet(paths["truth/deals"]).equals(deal_truth)
    assert pl.read_parquet(paths["truth/demand"]).equals(demand_truth)
    assert pl.read_parquet(paths["truth/holidays"]).height > 100
    world = json.loads(paths["truth/world"].read_text())
    assert world["seed"] == 5 and world["end"] == WORLD_END.isoformat()
    assert {"activity_type": "demo", "contact_role": "cto", "log_odds": 1.0} in world["planted"][
        "deals"
    ]["activity_effects"]
    assert not list(tmp_path.rglob("*.partial"))
    fractions = [fraction for _, fraction in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert {step for step, _ in seen} == {"deals", "demand"}


def test_zero_deals_writes_only_demand(tmp_path: Path) -> None:
    paths = write_sample(tmp_path, deals=0, series=5, days=3)
    assert "deals" not in paths and "sales" in paths
    assert not (tmp_path / "deals.parquet").exists()


def test_module_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--deals", "50", "--series", "4", "--days", "3"]) == 0
    assert f"deals: {tmp_path / 'deals.parquet'}" in capsys.readouterr().out


@pytest.mark.skipif(not (BUNDLED / "deals.parquet").exists(), reason="bundled sample not built")
def test_bundled_sample_is_small_and_trainable() -> None:
    size = sum(p.stat().st_size for p in BUNDLED.rglob("*") if p.is_file())
    assert size < 5_000_000
    outcomes = pl.read_parquet(BUNDLED / "deals.parquet")["outcome"].value_counts()
    counts = dict(outcomes.iter_rows())
    assert counts["won"] >= 300 and counts["lost"] >= 300 and counts[None] > 0
    for name in ["deal_stage_history", "deal_close_date_history", "activities", "accounts"]:
        assert pl.read_parquet(BUNDLED / f"{name}.parquet").height > 0
    for name in ["sales", "signals", "inventory"]:
        assert pl.read_parquet(BUNDLED / f"{name}.parquet").height > 0


SMALL = {"deals": 40, "series": 3, "days": 2, "deal_days": 60}


def test_refuses_to_write_beside_a_users_tables(tmp_path: Path) -> None:
    (tmp_path / "deals.csv").write_text("deal_id\nD1\n")
    with pytest.raises(SampleFolderError, match=r"deals\.csv\); choose an empty folder, or pass"):
        write_sample(tmp_path, **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deals.csv"]
    paths = write_sample(tmp_path, force=True, **SMALL)
    assert paths["deals"] == tmp_path / "deals.parquet"


def test_rewrites_an_earlier_sample_but_never_mixes_two_worlds(tmp_path: Path) -> None:
    write_sample(tmp_path, **SMALL)
    again = write_sample(tmp_path, seed=1, **SMALL)  # same tables again: replaced
    assert pl.read_parquet(again["deals"]).height == 40
    with pytest.raises(SampleFolderError, match=r"deals\.parquet"):
        write_sample(tmp_path, **{**SMALL, "deals": 0})  # old deals would sit beside new sales


def test_cli_sample_beside_a_users_table_is_one_line(tmp_path: Path) -> None:
    from tests.clihelp import assert_one_line_or_ok, run_cli

    (tmp_path / "sales").mkdir()
    (tmp_path / "sales" / "part.parquet").write_bytes(b"")
    result = run_cli(["sample", "--out", str(tmp_path), "--deals", "0", "--series", "2"])
    line = assert_one_line_or_ok(result)
    assert result.exit_code == 1 and line is not None and "(sales/)" in line
    assert main(["--out", str(tmp_path), "--deals", "0", "--series", "2", "--days", "2"]) == 2
