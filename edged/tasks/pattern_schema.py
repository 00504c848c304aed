"""The `base_patterns` table (its own migration, `m007_base_patterns`), apart from its queries so that the
migrations import no store code.

- base_patterns: one shared 2:4 pattern per resident base (`base_model`, `model_options` JSON, `seed`, as in
  `tasks`): `pattern_id` the sha256 of its stored bytes (the blob holding the bit-packed keep-masks, see
  `edged.sparse.shared_pattern`), `pattern` ("2:4"), `layers` pruned, `bytes`, `source_task` the task whose
  importance made it, `created_at`. The pattern outlives that task: later tasks on the base are pruned to it.
"""

from __future__ import annotations

import sqlite_utils


def m007_base_patterns(db: sqlite_utils.Database) -> None:
    """Migration: `base_patterns`, the 2:4 pattern the tasks on one base share (issue 11)."""
    db.execute(
        """CREATE TABLE IF NOT EXISTS base_patterns (
            base_model TEXT NOT NULL,
            model_options TEXT NOT NULL DEFAULT '{}',
            seed INTEGER NOT NULL,
            pattern_id TEXT NOT NULL,
            pattern TEXT NOT NULL,
            layers INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            source_task TEXT,
            created_at TEXT NOT NULL,
            PRIMARY KEY (base_model, model_options, seed)
        )"""
    )
