"""Where a report may be written, and writing it so that no reader sees half a file.

`report --out` is a path a user types, so one slip (`--out out/demo/warehouse.duckdb`) would
replace an input with HTML. `check_out_path` refuses every path salesml reads from (a source
table or anything in the sources folder, a DuckDB source, the warehouse, the MLflow store, the
config file) and, unless `force`, any existing file that is not a salesml report (recognised by
the generator marker `render` puts in every page). `write_atomic` writes beside the target and
renames, so the old file stays whole until the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    from salesml.config import Settings

GENERATOR = "salesml report"
MARKER = f'<meta name="generator" content="{GENERATOR}">'
# Reports written before the marker existed start with this title.
_LEGACY_MARKER = "<title>salesml report · as of"
_SNIFF_BYTES = 4096
# Files a database keeps beside its main file (DuckDB WAL, SQLite WAL / journal).
_COMPANION_SUFFIXES = (".wal", "-wal", "-shm", "-journal")


class ReportPathError(ValueError):
    """The report cannot be written to the path asked for; the message says what to do."""


def is_own_report(path: Path) -> bool:
    """Whether `path` is a file this command wrote (its head holds the generator marker)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return False
    return MARKER in head or _LEGACY_MARKER in head


def protected_paths(
    settings: Settings, config_path: Path | None = None
) -> list[tuple[str, str, Path]]:
    """(what, config key, path) of everything salesml reads: a report must never replace one.

    Folders (the sources folder, MLflow's artifact folder) protect everything inside them.
    """
    from salesml import tracking
    from salesml.urls import duckdb_path, split_url

    found: list[tuple[str, str, Path]] = []
    if settings.sources.path is not None:
        found.append(("the sources folder", "sources.path", settings.sources.path))
    elif settings.sources.url and split_url(settings.sources.url)[0] == "duckdb":
        found.append(("the DuckDB source", "sources.url", duckdb_path(settings.sources.url)))
    if split_url(settings.warehouse.url)[0] == "duckdb":
        found.append(("the warehouse", "warehouse.url", duckdb_path(settings.warehouse.url)))
    uri, key = settings.mlflow.tracking_uri, "mlflow.tracking_uri"
    db = tracking.sqlite_path(uri)
    if db is not None:
        found.append(("the MLflow store", key, db))
        found.append(("the MLflow artifact folder", key, db.parent / "mlartifacts"))
    elif uri.startswith("file:"):
        found.append(("the MLflow store", key, Path(urlparse(uri).path)))
    elif "://" not in uri:
        found.append(("the MLflow store", key, Path(uri)))
    if config_path is not None:
        found.append(("the config file", "--config", config_path))
    return found


def check_out_path(
    path: Path,
    settings: Settings,
    *,
    config_path: Path | None = None,
    force: bool = False,
) -> Path:
    """`path` if a report may be written there, else ReportPathError naming why.

    Inputs (see `protected_paths`) are refused even with `force`; `force` only allows
    replacing an existing file that is not a salesml report.
    """
    if path.is_dir():
        raise ReportPathError(
            f"report --out {path} is a folder; give a file name, e.g. {path / 'report.html'}"
        )
    blocking = next((p for p in path.parents if p.exists() or p.is_symlink()), None)
    if blocking is not None and not blocking.is_dir():
        raise ReportPathError(
            f"report --out {path}: {blocking} is a file, not a folder; choose another path"
        )
    for what, key, protected in protected_paths(settings, config_path):
        relation = _relation(path, protected)
        if relation is not None:
            raise ReportPathError(
                f"report --out {path} {relation} {what} {protected} ({key}), which a report "
                "must never replace; choose another file name"
            )
    if (path.exists() or path.is_symlink()) and not force and not is_own_report(path):
        raise ReportPathError(
            f"report --out {path} exists and is not a salesml report; "
            "choose another file name, or pass --force to replace it"
        )
    return path


def write_atomic(path: Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder and a rename.

    A reader (or a crash) sees either the old file or the complete new one, never half.
    """
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ReportPathError(
            f"report --out {path}: {folder} is a file, not a folder; choose another path"
        ) from None
    mode = _file_mode(path)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".salesml-", suffix=".html.tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def _file_mode(path: Path) -> int:
    """The permissions the report gets: the replaced file's, else what open() would give.

    mkstemp creates files readable by the owner only; a report is meant to be shared.
    """
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def _relation(path: Path, protected: Path) -> str | None:
    """How `path` touches `protected`: "is", "is inside", "is a file of", "links to"; or None."""
    target, guarded = path.resolve(), protected.resolve()
    if target == guarded:
        return "is"
    if guarded in target.parents:
        return "is inside"
    if any(target == guarded.with_name(guarded.name + end) for end in _COMPANION_SUFFIXES):
        return "is a file of"
    try:
        if path.exists() and protected.exists() and os.path.samefile(path, protected):
            return "links to"
    except OSError:
        pass
    return None
