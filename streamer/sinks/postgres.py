"""Attributed rows into ``<schema>.spend_attribution``, inside the committer's transaction.

Rows arrive in chunks while a batch is open, so memory stays bounded however
large a source transaction is. The common case, rows never attributed before,
is one COPY straight into the table (under a savepoint). A chunk that repeats a
``request_id`` (a spend-log UPDATE, a row written twice) falls back to a
staging table that is upserted at commit time, last version winning; once a
batch stages anything, the rest of the batch stages too, so order is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql

from streamer.enrich import AttributedRecord

_COLUMNS = AttributedRecord._fields
_STAGE = sql.Identifier("streamer_attribution_stage")


class PostgresSink:
    """COPY into the target when rows are new, stage-and-upsert when they are not."""

    def __init__(self, conn: psycopg.Connection, schema: str) -> None:
        self._conn = conn
        self._staging = False
        target = sql.SQL("{}.spend_attribution").format(sql.Identifier(schema))
        columns = sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c))
            for c in (*_COLUMNS, "attributed_at")
            if c != "request_id"
        )
        conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {target} INCLUDING DEFAULTS, "
                "stage_seq bigint GENERATED ALWAYS AS IDENTITY) ON COMMIT DELETE ROWS"
            ).format(stage=_STAGE, target=target)
        )
        conn.commit()
        self._copy_target = sql.SQL("COPY {} ({}) FROM STDIN").format(target, columns)
        self._copy_stage = sql.SQL("COPY {} ({}) FROM STDIN").format(_STAGE, columns)
        self._merge = sql.SQL(
            "INSERT INTO {target} ({columns}) "
            "SELECT DISTINCT ON (request_id) {columns} FROM {stage} ORDER BY request_id, stage_seq DESC "
            "ON CONFLICT (request_id) DO UPDATE SET {updates}"
        ).format(target=target, columns=columns, stage=_STAGE, updates=updates)

    def write(self, records: Sequence[AttributedRecord]) -> None:
        """Write records in the open transaction (visible to others at commit)."""
        if not records:
            return
        if not self._staging:
            try:
                with self._conn.transaction():  # a savepoint: a duplicate undoes this chunk only
                    self._copy(self._copy_target, records)
                return
            except psycopg.errors.UniqueViolation:
                self._staging = True
        self._copy(self._copy_stage, records)

    def prepare_commit(self) -> None:
        """Upsert what was staged (the caller commits)."""
        if self._staging:
            self._conn.execute(self._merge)
            self._staging = False

    def _copy(self, statement: sql.Composed, records: Sequence[AttributedRecord]) -> None:
        with self._conn.cursor().copy(statement) as copy:
            write_row = copy.write_row
            for record in records:
                write_row(record)
