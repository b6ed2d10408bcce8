"""The persisted history and checkpoint, in streamer's own schema of the state database.

Schema changes are versioned migrations, applied once each under an advisory
lock. Versions and the checkpoint are written in the caller's transaction:
the pipeline commits them together with the attributed rows.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from psycopg import sql

from streamer.lsn import Lsn, format_lsn, parse_lsn
from streamer.state.history import Entity, History, VersionChange

_ID_COLUMN = {Entity.KEY: "token", Entity.TEAM: "team_id", Entity.ORGANIZATION: "organization_id"}


def versions_table(entity: Entity) -> str:
    return f"{entity.label}_versions"


MIGRATIONS: tuple[str, ...] = (
    # 1: history, checkpoint, attributed rows
    """
    CREATE TABLE {schema}.key_versions (
        token            text    NOT NULL,
        valid_from       pg_lsn  NOT NULL,
        seq              integer NOT NULL,
        key_alias        text,
        key_name         text,
        team_id          text,
        user_id          text,
        organization_id  text,
        deleted          boolean NOT NULL,
        rotated_to       text,
        PRIMARY KEY (token, valid_from, seq)
    );
    CREATE TABLE {schema}.team_versions (
        team_id          text    NOT NULL,
        valid_from       pg_lsn  NOT NULL,
        seq              integer NOT NULL,
        team_alias       text,
        organization_id  text,
        deleted          boolean NOT NULL,
        PRIMARY KEY (team_id, valid_from, seq)
    );
    CREATE TABLE {schema}.organization_versions (
        organization_id    text    NOT NULL,
        valid_from         pg_lsn  NOT NULL,
        seq                integer NOT NULL,
        organization_alias text,
        deleted            boolean NOT NULL,
        PRIMARY KEY (organization_id, valid_from, seq)
    );
    CREATE TABLE {schema}.checkpoint (
        slot_name   text PRIMARY KEY,
        lsn         pg_lsn NOT NULL,
        updated_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE {schema}.spend_attribution (
        request_id          text PRIMARY KEY,
        api_key             text NOT NULL,
        key_alias           text,
        key_name            text,
        team_id             text,
        team_alias          text,
        organization_id     text,
        organization_alias  text,
        user_id             text,
        spend               double precision,
        model               text,
        start_time          timestamp(3),
        attribution_source  text NOT NULL,
        unattributed_reason text,
        commit_lsn          pg_lsn NOT NULL,
        commit_time         timestamptz NOT NULL,
        attributed_at       timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    CREATE VIEW {schema}.team_names AS
        SELECT DISTINCT ON (team_id)
               team_id, team_alias, organization_id, deleted, valid_from AS last_changed_lsn
          FROM {schema}.team_versions
         ORDER BY team_id, valid_from DESC, seq DESC;
    """,
    # 2: what each sink is doing, for `streamer status`
    """
    CREATE TABLE {schema}.sink_status (
        sink    text PRIMARY KEY,
        state   text NOT NULL,
        detail  text,
        since   timestamptz NOT NULL DEFAULT now()
    );
    """,
)


def migrate(conn: psycopg.Connection, schema: str) -> int:
    """Bring the state schema to the latest version; returns how many migrations ran."""
    ident = sql.Identifier(schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('streamer.migrate'))")
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.schema_migrations "
                "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(ident)
        )
        row = conn.execute(
            sql.SQL("SELECT coalesce(max(version), 0) FROM {}.schema_migrations").format(ident)
        ).fetchone()
        current = int(row[0]) if row else 0
        for version, statement in enumerate(MIGRATIONS[current:], start=current + 1):
            conn.execute(sql.SQL(statement).format(schema=ident))  # type: ignore[arg-type]
            conn.execute(
                sql.SQL("INSERT INTO {}.schema_migrations (version) VALUES (%s)").format(ident), (version,)
            )
    return len(MIGRATIONS) - current


def create_report_views(conn: psycopg.Connection, schema: str, source_schema: str) -> bool:
    """``spend_logs_attributed``: the live spend logs beside their attribution.

    Only possible when the state database is the LiteLLM database; returns
    whether the view exists. ``team_alias`` is the team's current (or last)
    alias; ``team_alias_at_request`` the one of the request's time. The view
    names a few long-standing columns instead of ``s.*``: a view pins every
    column it reads, and must not block the proxy's own migrations.
    """
    exists = conn.execute(
        "SELECT to_regclass(format('%%I.%%I', %s::text, 'LiteLLM_SpendLogs')) IS NOT NULL", (source_schema,)
    ).fetchone()
    if not exists or not exists[0]:
        return False
    with conn.transaction():
        conn.execute(
            sql.SQL(
                """
                CREATE OR REPLACE VIEW {schema}.spend_logs_attributed AS
                SELECT s.request_id, s.api_key, s.spend, s.total_tokens, s.prompt_tokens,
                       s.completion_tokens, s."startTime", s."endTime", s.model, s.team_id,
                       a.team_id             AS attributed_team_id,
                       coalesce(t.team_alias, a.team_alias) AS team_alias,
                       a.team_alias          AS team_alias_at_request,
                       a.key_alias,
                       a.key_name,
                       a.user_id             AS attributed_user_id,
                       a.organization_id     AS attributed_organization_id,
                       a.organization_alias,
                       a.attribution_source,
                       a.unattributed_reason,
                       a.commit_lsn
                  FROM {source}."LiteLLM_SpendLogs" s
                  LEFT JOIN {schema}.spend_attribution a ON a.request_id = s.request_id
                  LEFT JOIN {schema}.team_names t ON t.team_id = a.team_id
                """
            ).format(schema=sql.Identifier(schema), source=sql.Identifier(source_schema))
        )
    return True


def load_history(conn: psycopg.Connection, schema: str) -> History:
    """Every persisted version, in position order."""
    history = History()
    for entity in Entity:
        columns = [_ID_COLUMN[entity], "valid_from", "seq", *entity.version_type._fields]
        query = sql.SQL("SELECT {} FROM {}.{} ORDER BY valid_from, seq").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.Identifier(schema),
            sql.Identifier(versions_table(entity)),
        )
        with conn.cursor() as cur:
            for entity_id, valid_from, seq, *fields in cur.execute(query):
                position = (parse_lsn(valid_from), seq)
                history.restore(VersionChange(entity, entity_id, position, entity.version_type(*fields)))
    return history


def save_versions(conn: psycopg.Connection, schema: str, changes: Iterable[VersionChange]) -> None:
    by_entity: dict[Entity, list[VersionChange]] = {}
    for change in changes:
        by_entity.setdefault(change.entity, []).append(change)
    for entity, entity_changes in by_entity.items():
        columns = [_ID_COLUMN[entity], "valid_from", "seq", *entity.version_type._fields]
        statement = sql.SQL("COPY {}.{} ({}) FROM STDIN").format(
            sql.Identifier(schema),
            sql.Identifier(versions_table(entity)),
            sql.SQL(", ").join(map(sql.Identifier, columns)),
        )
        with conn.cursor().copy(statement) as copy:
            for change in entity_changes:
                lsn, seq = change.position
                copy.write_row((change.entity_id, format_lsn(lsn), seq, *change.version))


def load_checkpoint(conn: psycopg.Connection, schema: str, slot: str) -> Lsn | None:
    row = conn.execute(
        sql.SQL("SELECT lsn::text FROM {}.checkpoint WHERE slot_name = %s").format(sql.Identifier(schema)),
        (slot,),
    ).fetchone()
    return parse_lsn(row[0]) if row else None


def save_checkpoint(conn: psycopg.Connection, schema: str, slot: str, lsn: Lsn) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.checkpoint (slot_name, lsn) VALUES (%s, %s) "
            "ON CONFLICT (slot_name) DO UPDATE SET lsn = excluded.lsn, updated_at = now()"
        ).format(sql.Identifier(schema)),
        (slot, format_lsn(lsn)),
    )


class StateStore:
    """The state database's side of a checkpoint: versions and the LSN, in one open transaction."""

    def __init__(self, conn: psycopg.Connection, schema: str, slot: str) -> None:
        self.conn = conn
        self.schema = schema
        self.slot = slot

    def load(self) -> tuple[History, Lsn | None]:
        history = load_history(self.conn, self.schema)
        checkpoint = load_checkpoint(self.conn, self.schema, self.slot)
        self.conn.commit()
        return history, checkpoint

    def save(self, versions: list[VersionChange], lsn: Lsn) -> None:
        save_versions(self.conn, self.schema, versions)
        save_checkpoint(self.conn, self.schema, self.slot, lsn)

    def commit(self) -> None:
        self.conn.commit()


def set_sink_status(dsn: str, schema: str, sink: str, state: str, detail: str | None = None) -> None:
    """Record a sink's state (``ok``, ``blocked``) on a connection of its own, outside any batch."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.sink_status (sink, state, detail) VALUES (%s, %s, %s) ON CONFLICT (sink) DO UPDATE "
                "SET state = excluded.state, detail = excluded.detail, since = CASE WHEN {}.sink_status.state = "
                "excluded.state THEN {}.sink_status.since ELSE now() END"
            ).format(sql.Identifier(schema), sql.Identifier(schema), sql.Identifier(schema)),
            (sink, state, detail),
        )
