"""The initial load: keys, teams, organizations and Deleted* archives, read under the
snapshot the slot exported, so the stream continues exactly where the load ends."""

from __future__ import annotations

import psycopg
from psycopg import sql

from streamer.lsn import Lsn
from streamer.state.history import History
from streamer.tables import ARCHIVE_ORDER_COLUMN, WatchedTable


def table_columns(conn: psycopg.Connection, schema: str, table: str) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
        (schema, table),
    ).fetchall()
    return {row[0] for row in rows}


def load_snapshot(
    conn: psycopg.Connection,
    snapshot_name: str,
    schema: str,
    tables: list[WatchedTable],
    history: History,
    consistent_point: Lsn,
) -> dict[str, int]:
    """Apply every entity row (``conn`` in autocommit mode: the snapshot needs a fresh transaction) as of the snapshot to ``history``; returns rows read per table.

    ``history`` may hold persisted versions (a re-setup after the slot was lost):
    rows equal to them add nothing, live entities the snapshot no longer has get
    a tombstone.
    """
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
    seq = 0
    counts: dict[str, int] = {}
    live: dict[object, set[str]] = {}
    entity_tables = sorted((t for t in tables if t.entity is not None), key=lambda t: t.archive)
    for table in entity_tables:
        assert table.entity is not None
        present = table_columns(conn, schema, table.name)
        columns = [table.id_column, *(c for c in table.entity.columns if c in present)]
        query = sql.SQL("SELECT {} FROM {}.{}").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(schema), sql.Identifier(table.name)
        )
        if table.archive and ARCHIVE_ORDER_COLUMN in present:  # newest archive row first wins
            query += sql.SQL(" ORDER BY {} DESC").format(sql.Identifier(ARCHIVE_ORDER_COLUMN))
        seen = live.setdefault(table.entity, set())
        count = 0
        with conn.cursor(name=f"snapshot_{table.name.lower()}") as cursor:
            for entity_id, *values in cursor.execute(query):
                seq += 1
                count += 1
                fields = dict(zip(columns[1:], values))
                if table.archive:
                    history.archive(table.entity, entity_id, fields, (consistent_point, seq))
                else:
                    seen.add(entity_id)
                    history.upsert(table.entity, entity_id, fields, (consistent_point, seq))
        counts[table.name] = count
    for entity, seen in live.items():
        for entity_id in list(history.ids(entity)):  # type: ignore[arg-type]
            current = history.current(entity, entity_id)  # type: ignore[arg-type]
            if entity_id not in seen and current is not None and not current.deleted:
                seq += 1
                history.delete(entity, entity_id, None, (consistent_point, seq))  # type: ignore[arg-type]
    conn.execute("COMMIT")
    return counts
