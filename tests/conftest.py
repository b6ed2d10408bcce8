"""Shared fixtures: one ephemeral PostgreSQL (wal_level=logical) per test session,
a fresh LiteLLM database per test, and a streamer running in a thread."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from streamer.config import Settings, load_settings
from streamer.devdb import EphemeralPostgres

FIXTURES = Path(__file__).parent / "fixtures"
LITELLM_SCHEMA = (FIXTURES / "litellm_schema.sql").read_text()
WITHOUT_DELETED_TABLES = 'DROP TABLE "LiteLLM_DeletedVerificationToken"; DROP TABLE "LiteLLM_DeletedTeamTable";'

_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[EphemeralPostgres]:
    try:
        cluster = EphemeralPostgres(durable=False).start()
    except Exception as exc:  # noqa: BLE001 - say what to install
        pytest.fail(f"cannot start an ephemeral PostgreSQL ({exc}): install it with `apt-get install -y postgresql`")
    yield cluster
    cluster.stop()


class LiteLLMDatabase:
    """A fresh database with LiteLLM's tables, and the settings that point streamer at it."""

    def __init__(self, cluster: EphemeralPostgres, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.dsn = cluster.dsn_for(name)
        self.conn = psycopg.connect(self.dsn, autocommit=True)
        self.slot = name

    def settings(self, **overrides: object) -> Settings:
        values = {"source_dsn": self.dsn, "slot": self.slot, "flush_interval": 0.05, "status_interval": 1.0}
        return load_settings(**(values | overrides))

    def execute(self, query: str, params: object = None) -> list[tuple]:
        cursor = self.conn.execute(query, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []

    def current_lsn(self) -> str:
        return self.execute("SELECT pg_current_wal_insert_lsn()::text")[0][0]

    def wait_confirmed(self, lsn: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.execute(
                "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                (lsn, self.slot),
            )
            if row and row[0][0]:
                return
            time.sleep(0.05)
        raise AssertionError(f"slot {self.slot} did not confirm {lsn} within {timeout}s")

    def attribution(self, columns: str = "*") -> dict[str, tuple]:
        rows = self.execute(f"SELECT request_id, {columns} FROM litellm_attribution.spend_attribution")
        return {row[0]: row[1:] for row in rows}


@contextlib.contextmanager
def _new_database(cluster: EphemeralPostgres) -> Iterator[LiteLLMDatabase]:
    name = f"litellm_{next(_counter)}"
    with psycopg.connect(cluster.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    db = LiteLLMDatabase(cluster, name)
    db.execute(LITELLM_SCHEMA)
    try:
        yield db
    finally:
        db.conn.close()
        _drop_database(cluster, name)


def _drop_database(cluster: EphemeralPostgres, name: str) -> None:
    """Drop the database and every slot in it (an unconsumed slot retains WAL forever)."""
    with psycopg.connect(cluster.dsn, autocommit=True) as admin:
        for _ in range(100):
            admin.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = %s AND active",
                (name,),
            )
            for (slot,) in admin.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE database = %s AND NOT active", (name,)
            ).fetchall():
                admin.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            if not admin.execute("SELECT 1 FROM pg_replication_slots WHERE database = %s", (name,)).fetchone():
                break
            time.sleep(0.1)
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def litellm(postgres: EphemeralPostgres) -> Iterator[LiteLLMDatabase]:
    with _new_database(postgres) as db:
        yield db


class RunningStreamer:
    """``streamer run`` in a thread of the test process."""

    def __init__(self, db: LiteLLMDatabase, settings: Settings) -> None:
        from streamer.app import run_streamer

        self.db = db
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

        def target() -> None:
            try:
                run_streamer(settings, self.stop_event)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
                self.error = exc

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not db.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s AND active", (db.slot,)):
            self._check()
            assert time.monotonic() < deadline, "streamer did not start streaming within 30s"
            time.sleep(0.02)

    def _check(self) -> None:
        if self.error is not None:
            raise self.error
        assert self.thread.is_alive(), "streamer thread ended"

    def catch_up(self, timeout: float = 30) -> None:
        """Wait until everything written so far is attributed and acknowledged."""
        self._check()
        self.db.wait_confirmed(self.db.current_lsn(), timeout)
        self._check()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "streamer did not stop within 30s"
        if self.error is not None:
            raise self.error


@pytest.fixture
def streamer(litellm: LiteLLMDatabase) -> Iterator[RunningStreamer]:
    running = RunningStreamer(litellm, litellm.settings())
    yield running
    if running.thread.is_alive():
        running.stop()


from tests.kafka_support import broker  # noqa: E402,F401 - the session's Kafka-protocol broker fixture
