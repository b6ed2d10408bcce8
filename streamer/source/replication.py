"""The replication connection: START_REPLICATION, the CopyData loop, standby status.

psycopg's ``cursor.copy()`` cannot read a COPY_BOTH stream, so CopyData is read
and written through ``conn.pgconn``. Each read returns one event: XLogData
(a pgoutput message and its LSN), a primary keepalive, or None when nothing
arrived within the timeout.
"""

from __future__ import annotations

import logging
import select
import time
from struct import Struct
from typing import NamedTuple

import psycopg
from psycopg import sql

from streamer.errors import CannotConnect, ConnectionLost, SlotInUse, StreamerError
from streamer.lsn import Lsn, format_lsn
from streamer.source.pgoutput import POSTGRES_EPOCH

log = logging.getLogger(__name__)

_XLOG_HEADER = Struct(">QQq")  # data start, WAL end, server clock
_KEEPALIVE = Struct(">Qq?")  # WAL end, server clock, reply requested
_STANDBY_STATUS = Struct(">cQQQq?")
_EPOCH_UNIX = POSTGRES_EPOCH.timestamp()
_XLOG_DATA, _KEEPALIVE_BYTE = b"wk"


class XLogData(NamedTuple):
    data_start: Lsn
    wal_end: Lsn
    payload: bytes


class Keepalive(NamedTuple):
    wal_end: Lsn
    reply_requested: bool


Event = XLogData | Keepalive


def connect_replication(dsn: str) -> psycopg.Connection:
    try:
        return psycopg.connect(dsn, replication="database", autocommit=True)
    except psycopg.OperationalError as exc:
        raise CannotConnect(f"cannot open a replication connection: {str(exc).strip()}") from exc


class ReplicationStream:
    """One slot streamed with pgoutput protocol 1 over one replication connection."""

    def __init__(self, dsn: str, slot: str, publication: str) -> None:
        self._conn = connect_replication(dsn)
        self._slot = slot
        self._publication = publication
        self._received: Lsn = 0
        self._flushed: Lsn = 0

    def start(self, start_lsn: Lsn) -> None:
        statement = sql.SQL(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '1', publication_names {})"
        ).format(sql.Identifier(self._slot), sql.SQL(format_lsn(start_lsn)), sql.Literal(self._publication))
        try:
            self._conn.execute(statement)
        except psycopg.errors.ObjectInUse as exc:
            raise SlotInUse(f"replication slot {self._slot!r} is in use by another process") from exc
        except psycopg.Error as exc:
            raise StreamerError(f"START_REPLICATION on slot {self._slot!r} failed: {str(exc).strip()}") from exc
        self._flushed = start_lsn
        log.info("streaming slot %s from %s", self._slot, format_lsn(start_lsn))

    def read(self, timeout: float) -> list[Event]:
        """The events libpq has buffered (one socket read's worth), waiting up to
        ``timeout`` seconds for the first."""
        pgconn = self._conn.pgconn
        events: list[Event] = []
        deadline = time.monotonic() + timeout
        while True:
            size, data = pgconn.get_copy_data(1)
            if size > 0:
                events.append(self._parse(data))
                continue
            if size == -1:
                raise ConnectionLost(f"the server ended the replication stream: {self._stream_error()}")
            if size < -1:
                raise ConnectionLost(f"replication stream read failed: {pgconn.error_message.decode(errors='replace')}")
            if events:  # what libpq had buffered; the socket is read again on the next call
                return events
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([pgconn.socket], [], [], max(0.0, remaining))
            if readable:
                try:
                    pgconn.consume_input()
                except psycopg.OperationalError as exc:
                    raise ConnectionLost(f"replication connection lost: {str(exc).strip()}") from exc
            elif remaining <= 0:
                return events

    def _parse(self, data: memoryview) -> Event:
        kind = data[0]
        if kind == _XLOG_DATA:
            data_start, wal_end, _clock = _XLOG_HEADER.unpack_from(data, 1)
            if wal_end > self._received:
                self._received = wal_end
            return XLogData(data_start, wal_end, bytes(data[1 + _XLOG_HEADER.size :]))
        if kind == _KEEPALIVE_BYTE:
            wal_end, _clock, reply = _KEEPALIVE.unpack_from(data, 1)
            return Keepalive(wal_end, reply)
        raise StreamerError(f"unexpected CopyData message {chr(kind)!r} on the replication stream")

    def _stream_error(self) -> str:
        result = self._conn.pgconn.get_result()
        message = result.error_message if result is not None else b""
        return message.decode(errors="replace").strip() or "no reason given"

    def send_status(self, flushed: Lsn, reply: bool = False) -> None:
        """Standby status: written = received, flushed = applied = what is durable."""
        self._flushed = max(self._flushed, flushed)
        clock = int((time.time() - _EPOCH_UNIX) * 1_000_000)
        written = max(self._received, self._flushed)
        message = _STANDBY_STATUS.pack(b"r", written, self._flushed, self._flushed, clock, reply)
        pgconn = self._conn.pgconn
        if pgconn.put_copy_data(message) != 1 or pgconn.flush() != 0:
            raise ConnectionLost(f"cannot send standby status: {pgconn.error_message.decode(errors='replace')}")

    def close(self, drain_timeout: float = 5.0) -> None:
        """End the COPY and drain until the server ends it too: the server has then
        processed our last standby status, so ``confirmed_flush_lsn`` shows it."""
        pgconn = self._conn.pgconn
        try:
            if pgconn.put_copy_end() == 1 and pgconn.flush() == 0:
                deadline = time.monotonic() + drain_timeout
                while time.monotonic() < deadline:
                    size, _ = pgconn.get_copy_data(1)
                    if size == -1:
                        while pgconn.get_result() is not None:
                            pass
                        break
                    if size == 0:
                        select.select([pgconn.socket], [], [], max(0.0, deadline - time.monotonic()))
                        pgconn.consume_input()
        except Exception:  # closing after a failure: the slot keeps the last position the server saw
            log.debug("replication stream did not end cleanly", exc_info=True)
        self._conn.close()
