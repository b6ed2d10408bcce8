"""Attributed rows into ``<schema>.spend_attribution``, inside the pipeline's transaction.

Rows are COPYed into a temporary staging table as they come (so memory stays
bounded however large a source transaction is), then upserted at commit time
with the last version of each ``request_id`` winning: a spend-log UPDATE, or a
row written twice, leaves exactly one attribution row.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql

from streamer.enrich import AttributedRecord
from streamer.lsn import format_lsn

_COLUMNS = AttributedRecord._fields
_STAGE = sql.Identifier("streamer_attribution_stage")


class PostgresSink:
    """Stages records with COPY and moves them into the target table before commit."""

    def __init__(self, conn: psycopg.Connection, schema: str) -> None:
        self._conn = conn
        self._staged = 0
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
        self._copy = sql.SQL("COPY {} ({}) FROM STDIN").format(_STAGE, columns)
        self._merge = sql.SQL(
            "INSERT INTO {target} ({columns}) "
            "SELECT DISTINCT ON (request_id) {columns} FROM {stage} ORDER BY request_id, stage_seq DESC "
            "ON CONFLICT (request_id) DO UPDATE SET {updates}"
        ).format(target=target, columns=columns, stage=_STAGE, updates=updates)

    def write(self, records: Sequence[AttributedRecord]) -> None:
        """Stage records in the open transaction."""
        if not records:
            return
        with self._conn.cursor().copy(self._copy) as copy:
            write_row = copy.write_row
            for record in records:
                write_row(record._replace(commit_lsn=format_lsn(record.commit_lsn)))
        self._staged += len(records)

    def prepare_commit(self) -> None:
        """Upsert everything staged into the target table (the caller commits)."""
        if self._staged:
            self._conn.execute(self._merge)
            self._staged = 0
