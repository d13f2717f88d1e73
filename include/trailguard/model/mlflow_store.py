"""A data root's own MLflow store stays its own when the root is copied or moved.

MLflow writes absolute artifact locations into its SQLite store (experiments, runs, registered model
versions, logged models). A root copied to a new folder would go on reading and writing artifacts in the
original one. Before the default store of a root is used, locations that point into the root it was
created in are rewritten to point into the root where it now is, so the copy is self-contained and
never writes into its origin.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

# (table, column) holding artifact locations in MLflow 2/3 SQLite stores; absent ones are passed over
_LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
    ("logged_models", "artifact_location"),
)
_SUFFIX = "/mlflow/artifacts"


def relocate_local_store(folder: Path) -> str | None:
    """Point the store in ``folder`` (``<root>/mlflow``) at its own ``artifacts`` folder; returns the
    old root's artifact location when it was rewritten, None when it was already right (or is new)."""
    database = folder / "mlflow.db"
    if not database.exists():
        return None
    here = (folder.resolve() / "artifacts").as_uri()
    with sqlite3.connect(database) as connection:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "experiments" not in tables:
            return None
        found = {loc for (loc,) in connection.execute("SELECT artifact_location FROM experiments") if loc}
        old = next((loc for loc in sorted(found) if loc.endswith(_SUFFIX) and loc != here), None)
        if old is None:
            return None
        old_path, here_path = old.removeprefix("file://"), here.removeprefix("file://")
        for table, column in _LOCATION_COLUMNS:
            if table not in tables:
                continue
            columns = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                continue
            for before, after in ((old, here), (old_path, here_path)):
                connection.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE substr({column}, 1, ?) = ?",
                    (after, len(before) + 1, len(before), before),
                )
    log.warning(
        "the data root was copied or moved: its MLflow store now keeps artifacts in %s (was %s)", here, old
    )
    return old
