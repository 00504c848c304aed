"""The `base_patterns` table: all its SQL (the schema is `edged.tasks.pattern_schema`).

A base gets its shared 2:4 pattern from the first task published on it by a job that shares
(`share_2_4`, the default); the row is never replaced, so every later sharing task keeps the same zeros.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import sqlite_utils

from edged.store.blobs import BlobStore
from edged.store.db import utc_now
from edged.sparse.shared_pattern import unpack_pattern


def base_pattern(db: sqlite_utils.Database, base_model: str, model_options: dict[str, Any],
                 seed: int) -> Optional[dict[str, Any]]:
    """The base's shared pattern row, or None while no sharing 2:4 task has been published on it."""
    rows = list(db.query("SELECT * FROM base_patterns WHERE base_model = ? AND model_options = ? AND seed = ?",
                         [base_model, json.dumps(model_options), seed]))
    return rows[0] if rows else None


def load_base_pattern(db: sqlite_utils.Database, blobs: BlobStore, base_model: str, model_options: dict[str, Any],
                      seed: int) -> Optional[tuple[str, dict]]:
    """(pattern id, name -> bool keep-mask) of the base's shared pattern, read and verified from its blob."""
    row = base_pattern(db, base_model, model_options, seed)
    if row is None:
        return None
    with blobs.open(row["pattern_id"]) as stored:
        data = stored.read()
    return row["pattern_id"], unpack_pattern(data)


def set_base_pattern(db: sqlite_utils.Database, base_model: str, model_options: dict[str, Any], seed: int,
                     pattern_id: str, layers: int, size_bytes: int, source_task: str) -> bool:
    """Make `pattern_id` (a stored blob) the base's shared pattern unless it has one; True if this one is it."""
    db.execute(
        "INSERT OR IGNORE INTO base_patterns (base_model, model_options, seed, pattern_id, pattern, layers, bytes, "
        "source_task, created_at) VALUES (?, ?, ?, ?, '2:4', ?, ?, ?, ?)",
        [base_model, json.dumps(model_options), seed, pattern_id, layers, size_bytes, source_task, utc_now()])
    row = base_pattern(db, base_model, model_options, seed)
    return row is not None and row["pattern_id"] == pattern_id
