"""What each command does, apart from parsing and printing: run, status, teardown."""

from __future__ import annotations

import gc
import logging
import threading
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from streamer.assembler import TransactionAssembler
from streamer.committer import Committer, Sink
from streamer.config import Settings
from streamer.errors import CannotConnect, ConnectionLost, SinkUnavailable, SlotInUse, StreamerError
from streamer.lsn import format_lsn
from streamer.pipeline import Pipeline, run
from streamer.setup import connect, setup
from streamer.sinks.postgres import PostgresSink
from streamer.source.replication import ReplicationStream
from streamer.state.history import Entity
from streamer.state.store import StateStore, load_checkpoint, set_sink_status

if TYPE_CHECKING:
    from streamer.sinks.kafka import KafkaSink

log = logging.getLogger(__name__)


STANDBY_POLL = 1.0
"""Seconds between attempts to take over a slot another process streams."""
MAX_BACKOFF = 30.0
"""Longest wait between restarts while a sink is unavailable."""


def run_streamer(settings: Settings, stop: threading.Event) -> Committer | None:
    """Set up if needed, then stream until ``stop``; returns the committer (for its counters).

    Restarts from the checkpoint, with backoff, whenever it cannot go on for a
    reason that time may cure: another process streams the slot (wait as a hot
    standby, take over with the state it left), a sink is unavailable, or, once
    streaming has started, a database connection drops. Nothing was
    acknowledged past what every sink holds, so nothing is lost, nothing is
    read ahead meanwhile, and memory does not grow.
    """
    setup(settings, create_topics=False)  # the Kafka sink creates them on each start, with retries
    ever_streamed = False
    waiting = False
    backoff = 1.0
    while not stop.is_set():
        streamed = threading.Event()
        try:
            return _stream(settings, stop, streamed)
        except SlotInUse as exc:
            if not waiting:
                log.warning("%s: waiting as a standby to take over", exc)
                waiting = True
            stop.wait(STANDBY_POLL)
            continue
        except SinkUnavailable as exc:
            set_sink_status(settings.require_state_dsn(), settings.state_schema, "kafka", "blocked", str(exc))
            reason = str(exc)
        except (ConnectionLost, CannotConnect, psycopg.OperationalError) as exc:
            if not (ever_streamed or streamed.is_set()):
                raise  # never got going: a wrong DSN or password is not cured by waiting
            reason = str(exc).strip().splitlines()[0]
        if streamed.is_set():
            ever_streamed, backoff = True, 1.0
        log.warning("%s; restarting from the checkpoint in %.0f s", reason, backoff)
        stop.wait(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF)
    return None


def _kafka_sink(settings: Settings) -> KafkaSink:
    from streamer.sinks.kafka import KafkaSink, ensure_topics, read_checkpoint

    ensure_topics(settings)  # again on every start: an in-memory broker may have restarted empty
    skip_through = read_checkpoint(settings) if settings.kafka_delivery == "exactly_once" else None
    sink = KafkaSink(settings, skip_through)
    set_sink_status(settings.require_state_dsn(), settings.state_schema, "kafka", "ok")
    return sink


def _stream(settings: Settings, stop: threading.Event, streamed: threading.Event) -> Committer:
    with connect(settings.require_state_dsn(), "state") as state:
        store = StateStore(state, settings.state_schema, settings.slot)
        history, checkpoint = store.load()
        if checkpoint is None:
            raise StreamerError(f"no checkpoint for slot {settings.slot!r} after setup: run `streamer setup`")
        gc.freeze()  # the history lives as long as the process: keep it out of every collection
        gc.set_threshold(50_000, 20, 100)  # per-row tuples die young: collect them in larger, rarer sweeps
        log.info(
            "state loaded: %d keys, %d teams, checkpoint %s",
            history.count(Entity.KEY),
            history.count(Entity.TEAM),
            format_lsn(checkpoint),
        )
        sinks: list[Sink] = [PostgresSink(state, settings.state_schema)]
        kafka = _kafka_sink(settings) if settings.kafka_bootstrap else None
        if kafka is not None:
            sinks.insert(0, kafka)
        stream = ReplicationStream(settings.require_source_dsn(), settings.slot, settings.publication)
        try:
            stream.start(checkpoint)
            streamed.set()
            committer = Committer(
                sinks, store, checkpoint, while_waiting=lambda: stream.send_status(committer.committed_lsn)
            )
            pipeline = Pipeline(
                TransactionAssembler(history, settings.source_schema, checkpoint),
                committer,
                batch_size=settings.batch_size,
                flush_interval=settings.flush_interval,
            )
            try:
                run(stream, pipeline, stop, settings.status_interval)
            except BaseException:
                committer.abort()
                raise
        finally:
            stream.close()
            if kafka is not None:
                kafka.close()
    log.info("stopped at %s after %d attributed rows", format_lsn(committer.committed_lsn), committer.attributed_rows)
    return committer


def status(settings: Settings) -> dict[str, Any]:
    report: dict[str, Any] = {"slot": settings.slot, "publication": settings.publication}
    with connect(settings.require_source_dsn(), "source") as source:
        slot = source.execute(
            "SELECT active, confirmed_flush_lsn::text, restart_lsn::text, "
            "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (settings.slot,),
        ).fetchone()
        publication = source.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (settings.publication,))
        report["publication_exists"] = publication.fetchone() is not None
    report["slot_exists"] = slot is not None
    report["slot_active"], report["confirmed_flush_lsn"], report["restart_lsn"], report["lag_bytes"] = (
        slot if slot else (False, None, None, None)
    )
    with connect(settings.require_state_dsn(), "state") as state:
        schema = sql.Identifier(settings.state_schema)
        exists = state.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{settings.state_schema}.checkpoint",))
        if not exists.fetchone()[0]:  # type: ignore[index]
            return report | {"checkpoint_lsn": None, "keys": 0, "teams": 0, "organizations": 0, "attributed_rows": 0}
        checkpoint = load_checkpoint(state, settings.state_schema, settings.slot)
        report["checkpoint_lsn"] = format_lsn(checkpoint) if checkpoint is not None else None
        for label, table, column in (
            ("keys", "key_versions", "token"),
            ("teams", "team_versions", "team_id"),
            ("organizations", "organization_versions", "organization_id"),
        ):
            query = sql.SQL("SELECT count(DISTINCT {}) FROM {}.{}").format(
                sql.Identifier(column), schema, sql.Identifier(table)
            )
            report[label] = state.execute(query).fetchone()[0]  # type: ignore[index]
        counts = state.execute(
            sql.SQL(
                "SELECT count(*), count(*) FILTER (WHERE attribution_source = 'unattributed') "
                "FROM {}.spend_attribution"
            ).format(schema)
        ).fetchone()
        report["attributed_rows"], report["unattributed_rows"] = counts  # type: ignore[misc]
        report["sinks"] = {"postgres": {"state": "ok"}}
        if state.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{settings.state_schema}.sink_status",)).fetchone()[0]:  # type: ignore[index]
            rows = state.execute(sql.SQL("SELECT sink, state, detail, since::text FROM {}.sink_status").format(schema))
            for sink, sink_state, detail, since in rows:
                if sink != "kafka" or settings.kafka_bootstrap:
                    report["sinks"][sink] = {"state": sink_state, "detail": detail, "since": since}
    return report


def teardown(settings: Settings, drop_state: bool) -> list[str]:
    """Drop the slot and the publication (and the state schema); returns what was dropped."""
    dropped = []
    with connect(settings.require_source_dsn(), "source") as source:
        slot = source.execute(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (settings.slot,)
        ).fetchone()
        if slot is not None:
            if slot[0] is not None:
                raise StreamerError(
                    f"replication slot {settings.slot!r} is in use (pid {slot[0]}): stop the streamer first"
                )
            source.execute("SELECT pg_drop_replication_slot(%s)", (settings.slot,))
            dropped.append(f"slot {settings.slot}")
        if source.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (settings.publication,)).fetchone():
            source.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(settings.publication)))
            dropped.append(f"publication {settings.publication}")
        source.commit()
    with connect(settings.require_state_dsn(), "state") as state:
        schema = sql.Identifier(settings.state_schema)
        if drop_state:
            state.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))
            dropped.append(f"schema {settings.state_schema}")
        elif state.execute("SELECT to_regclass(%s)", (f"{settings.state_schema}.checkpoint",)).fetchone()[0]:  # type: ignore[index]
            # the history stays; without its slot the checkpoint means nothing
            state.execute(sql.SQL("DELETE FROM {}.checkpoint WHERE slot_name = %s").format(schema), (settings.slot,))
        state.commit()
    return dropped

