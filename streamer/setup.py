"""``streamer setup``: preflight, publication, state schema, slot, initial snapshot.

Safe to run again: each step checks what exists. The slot is created over a
replication connection, and the snapshot it exports is loaded before that
connection runs anything else, so snapshot and stream meet exactly at the
slot's consistent point.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from streamer.config import Settings
from streamer.errors import CannotConnect, StreamerError
from streamer.lsn import format_lsn, parse_lsn
from streamer.source.replication import connect_replication
from streamer.source.snapshot import load_snapshot
from streamer.state.store import StateStore, create_report_views, migrate, save_checkpoint, save_versions
from streamer.tables import WATCHED_TABLES, WatchedTable

log = logging.getLogger(__name__)


@dataclass
class SetupReport:
    tables: list[str]
    publication_created: bool = False
    migrations_applied: int = 0
    slot_created: bool = False
    consistent_point: str | None = None
    snapshot_rows: dict[str, int] = field(default_factory=dict)
    report_view: bool = False
    topics_created: list[str] = field(default_factory=list)


def connect(dsn: str, what: str) -> psycopg.Connection:
    try:
        return psycopg.connect(dsn)
    except psycopg.OperationalError as exc:
        raise CannotConnect(f"cannot connect to the {what} database: {str(exc).strip()}") from exc


def preflight(conn: psycopg.Connection, settings: Settings) -> list[WatchedTable]:
    """Check what logical replication needs; returns the watched tables that exist."""
    row = conn.execute("SHOW wal_level").fetchone()
    wal_level = row[0] if row else "unknown"
    if wal_level != "logical":
        raise StreamerError(
            f"wal_level is '{wal_level}', logical replication needs 'logical': run "
            "ALTER SYSTEM SET wal_level = logical; as a superuser, then restart PostgreSQL "
            "(e.g. `systemctl restart postgresql` or `pg_ctl restart -D <datadir>`), then run setup again"
        )
    row = conn.execute(
        "SELECT current_user, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if row and not row[1]:
        raise StreamerError(
            f'role "{row[0]}" lacks the REPLICATION attribute: run ALTER ROLE "{row[0]}" WITH REPLICATION; as a superuser'
        )
    present = [
        table
        for table in WATCHED_TABLES
        if conn.execute(
            "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
            (settings.source_schema, table.name),
        ).fetchone()[0]  # type: ignore[index]
    ]
    missing = [t.name for t in WATCHED_TABLES if t.required and t not in present]
    if missing:
        raise StreamerError(
            f"LiteLLM tables missing in schema {settings.source_schema!r}: {', '.join(missing)}: "
            "is STREAMER_SOURCE_DSN LiteLLM's database, has the proxy run its migrations, "
            "and is STREAMER_SOURCE_SCHEMA right?"
        )
    used, limit, exists = conn.execute(
        "SELECT (SELECT count(*) FROM pg_replication_slots), current_setting('max_replication_slots')::int, "
        "EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)",
        (settings.slot,),
    ).fetchone()  # type: ignore[misc]
    if not exists and used >= limit:
        raise StreamerError(
            f"no free replication slot ({used} of max_replication_slots={limit} in use): drop an unused one "
            "with SELECT pg_drop_replication_slot('<name>'), or raise max_replication_slots and restart PostgreSQL"
        )
    return present


def ensure_publication(conn: psycopg.Connection, settings: Settings, tables: list[WatchedTable]) -> bool:
    """The publication on exactly the watched tables; returns whether it was created."""
    name = sql.Identifier(settings.publication)
    qualified = [sql.Identifier(settings.source_schema, t.name) for t in tables]
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (settings.publication,)).fetchone()
    if not exists:
        conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(name, sql.SQL(", ").join(qualified)))
        conn.commit()
        return True
    published = {
        (r[0], r[1])
        for r in conn.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", (settings.publication,)
        )
    }
    for table, ident in zip(tables, qualified):
        if (settings.source_schema, table.name) not in published:  # e.g. Deleted* tables after an upgrade
            conn.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(name, ident))
    conn.execute(sql.SQL("ALTER PUBLICATION {} SET (publish = 'insert, update, delete, truncate')").format(name))
    conn.commit()
    return False


def setup(settings: Settings, create_topics: bool = True) -> SetupReport:
    """Everything ``run`` needs; ``create_topics=False`` leaves Kafka to the sink's own start."""
    source_dsn = settings.require_source_dsn()
    with connect(source_dsn, "source") as source, connect(settings.require_state_dsn(), "state") as state:
        tables = preflight(source, settings)
        report = SetupReport(tables=[t.name for t in tables])
        report.publication_created = ensure_publication(source, settings, tables)
        report.migrations_applied = migrate(state, settings.state_schema)
        report.report_view = create_report_views(state, settings.state_schema, settings.source_schema)
        if settings.kafka_bootstrap and create_topics:
            from streamer.sinks.kafka import ensure_topics

            report.topics_created = ensure_topics(settings)
        store = StateStore(state, settings.state_schema, settings.slot)
        history, checkpoint = store.load()
        slot = source.execute(
            "SELECT active, plugin, database = current_database() FROM pg_replication_slots WHERE slot_name = %s",
            (settings.slot,),
        ).fetchone()
        source.commit()
        if slot is not None:
            active, plugin, same_database = slot
            if plugin != "pgoutput" or not same_database:
                raise StreamerError(
                    f"replication slot {settings.slot!r} exists but is not a pgoutput slot of this database: "
                    "choose another STREAMER_SLOT"
                )
            if checkpoint is not None:
                return report  # already set up
            if active:
                raise StreamerError(f"replication slot {settings.slot!r} is in use by another process")
            log.warning("dropping slot %s left by an interrupted setup", settings.slot)
            source.execute("SELECT pg_drop_replication_slot(%s)", (settings.slot,))
            source.commit()
        elif checkpoint is not None:
            log.warning(
                "slot %s is gone but state exists (checkpoint %s): taking a new snapshot on top of the "
                "history; spend rows written while no slot existed are not attributed",
                settings.slot,
                format_lsn(checkpoint),
            )

        replication = connect_replication(source_dsn)
        try:
            name, point, snapshot_name, _ = replication.execute(
                sql.SQL("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export')").format(
                    sql.Identifier(settings.slot)
                )
            ).fetchone()  # type: ignore[misc]
            consistent_point = parse_lsn(point)
            with psycopg.connect(source_dsn, autocommit=True) as snapshot_conn:
                report.snapshot_rows = load_snapshot(
                    snapshot_conn, snapshot_name, settings.source_schema, tables, history, consistent_point
                )
            save_versions(state, settings.state_schema, history.take_unsaved())
            save_checkpoint(state, settings.state_schema, settings.slot, consistent_point)
            state.commit()
        except BaseException:
            state.rollback()
            replication.close()
            _drop_slot_quietly(source, settings.slot)
            raise
        replication.close()
        report.slot_created = True
        report.consistent_point = point
        log.info("slot %s created at %s, snapshot loaded: %s", name, point, report.snapshot_rows)
        return report


def _drop_slot_quietly(conn: psycopg.Connection, slot: str) -> None:
    try:
        conn.rollback()
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        conn.commit()
    except psycopg.Error:
        log.warning("could not drop slot %s after a failed setup: run `streamer teardown`", slot)
