"""Attributed rows into ``<schema>.spend_attribution``, inside the committer's transaction.

Rows arrive in chunks while a batch is open. The common case, rows never
attributed before, is one COPY straight into the table per chunk, with no
extra round trip. A chunk that repeats a ``request_id`` (a spend-log UPDATE, a
row written again) makes that COPY fail: the batch so far is rolled back and
written again through a staging table, upserted at commit time with the last
version winning. Only the direct chunks of the open batch are kept in memory
for that replay, up to ``replay_limit`` rows; past it (a huge source
transaction) the batch stages from then on, which cannot fail, so memory stays
bounded.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql

from streamer.enrich import AttributedRecord
from streamer.lsn import Lsn
from streamer.state.history import VersionChange

_COLUMNS = AttributedRecord._fields
_STAGE = sql.Identifier("streamer_attribution_stage")


class PostgresSink:
    """COPY into the target while rows are new; stage and upsert once they are not."""

    def __init__(self, conn: psycopg.Connection, schema: str, replay_limit: int = 20_000) -> None:
        self._conn = conn
        self._replay_limit = replay_limit
        self._direct: list[Sequence[AttributedRecord]] = []  # this batch's chunks COPYed to the target
        self._direct_rows = 0
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
        """Write records in the open transaction (the batch holds nothing else before commit)."""
        if not records:
            return
        if not self._staging and self._direct_rows + len(records) <= self._replay_limit:
            try:
                self._copy(self._copy_target, records)
                self._direct.append(records)
                self._direct_rows += len(records)
                return
            except psycopg.errors.UniqueViolation:
                self._conn.rollback()
                replay, self._direct, self._direct_rows = self._direct, [], 0
                for chunk in replay:
                    self._copy(self._copy_stage, chunk)
        self._staging = True
        self._copy(self._copy_stage, records)

    def prepare_commit(self, versions: list[VersionChange], lsn: Lsn) -> None:
        """Upsert what was staged; the versions and checkpoint go in with the store (the caller commits)."""
        if self._staging:
            self._conn.execute(self._merge)
        self._staging = False
        self._direct, self._direct_rows = [], 0

    def _copy(self, statement: sql.Composed, records: Sequence[AttributedRecord]) -> None:
        with self._conn.cursor().copy(statement) as copy:
            write_row = copy.write_row
            for record in records:
                write_row(record)
