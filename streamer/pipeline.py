"""Transactions in, batches out: the one place that makes data durable and acknowledges it.

Many source transactions are batched into one state-database commit (up to
``batch_size`` attributed rows, or ``flush_interval`` seconds after the first
handled change). Attributed rows are staged as they come, so a huge source
transaction does not accumulate in memory. A keepalive is an event with a
position like any other: when nothing is pending, acknowledging it moves the
slot past WAL that holds nothing for us.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from streamer.assembler import TransactionAssembler
from streamer.enrich import AttributedRecord
from streamer.lsn import Lsn, format_lsn
from streamer.source.pgoutput import decode
from streamer.source.replication import Keepalive, XLogData
from streamer.state.history import VersionChange

log = logging.getLogger(__name__)

STAGE_CHUNK = 2000
"""Attributed rows handed to the sink at a time, inside the open batch."""


class Sink(Protocol):
    def write(self, records: list[AttributedRecord]) -> None: ...
    def prepare_commit(self) -> None: ...


class Store(Protocol):
    def save(self, versions: list[VersionChange], lsn: Lsn) -> None: ...
    def commit(self) -> None: ...


class Source(Protocol):
    def read(self, timeout: float) -> object | None: ...
    def send_status(self, flushed: Lsn, reply: bool = False) -> None: ...


class Pipeline:
    """Assembles the stream and checkpoints it."""

    def __init__(
        self,
        assembler: TransactionAssembler,
        sink: Sink,
        store: Store,
        acknowledge: Callable[[Lsn], None],
        *,
        durable_lsn: Lsn,
        batch_size: int,
        flush_interval: float,
    ) -> None:
        self.assembler = assembler
        self.sink = sink
        self.store = store
        self.acknowledge = acknowledge
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.durable_lsn = durable_lsn  # everything before it is committed (or held nothing)
        self.handled_lsn = durable_lsn  # everything before it is applied in memory or staged
        self._batch_rows = 0
        self._batch_dirty = False
        self._batch_started = 0.0
        self.attributed_rows = 0

    def on_data(self, lsn: Lsn, payload: bytes) -> None:
        assembler = self.assembler
        commit = assembler.feed(decode(payload, lsn), lsn)
        if len(assembler.records) >= STAGE_CHUNK:
            self._stage()
        if commit is None:
            return
        self.handled_lsn = max(self.handled_lsn, commit.end_lsn)
        if not self._batch_dirty:
            if not (assembler.records or self._batch_rows or assembler.history.unsaved):
                self._advance_idle()  # a transaction that changed nothing we keep
                return
            self._batch_dirty = True
            self._batch_started = time.monotonic()
        if self._batch_rows + len(assembler.records) >= self.batch_size:
            self.checkpoint()

    def on_keepalive(self, wal_end: Lsn) -> None:
        if not self.assembler.in_transaction:
            self.handled_lsn = max(self.handled_lsn, wal_end)
            if not self._batch_dirty:
                self._advance_idle()

    def on_tick(self) -> None:
        """Checkpoint a batch whose first change has waited ``flush_interval``.

        Only between transactions: what is staged then belongs to complete ones.
        """
        if self._batch_dirty and not self.assembler.in_transaction and time.monotonic() - self._batch_started >= self.flush_interval:
            self.checkpoint()

    def _stage(self) -> None:
        records = self.assembler.records
        self.sink.write(records)
        self._batch_rows += len(records)
        self.assembler.records = []

    def _advance_idle(self) -> None:
        """Nothing is pending: what has been read is as good as durable."""
        if self.handled_lsn > self.durable_lsn:
            self.durable_lsn = self.handled_lsn
            self.acknowledge(self.durable_lsn)

    def checkpoint(self) -> None:
        """The checkpoint, in this order and nowhere else:

        1. the sink receives the last records and merges what it staged;
        2. the new history versions and the checkpoint LSN join them;
        3. one commit makes all of it durable at once;
        4. only then is the slot acknowledged.
        """
        if not self._batch_dirty:
            return
        assert not self.assembler.in_transaction, "checkpoint inside a source transaction"
        self._stage()
        self.sink.prepare_commit()
        self.store.save(self.assembler.history.take_unsaved(), self.handled_lsn)
        self.store.commit()
        self.attributed_rows += self._batch_rows
        log.debug("checkpoint %s: %d rows", format_lsn(self.handled_lsn), self._batch_rows)
        self._batch_rows = 0
        self._batch_dirty = False
        self.durable_lsn = self.handled_lsn
        self.acknowledge(self.durable_lsn)


def run(source: Source, pipeline: Pipeline, stop: threading.Event, status_interval: float) -> None:
    """Read until ``stop`` is set and the open transaction is complete, then checkpoint it all."""
    next_status = time.monotonic() + status_interval
    poll = min(pipeline.flush_interval, 0.2)
    while not stop.is_set() or pipeline.assembler.in_transaction:
        event = source.read(poll)
        if type(event) is XLogData:
            pipeline.on_data(event.data_start, event.payload)  # type: ignore[union-attr]
        elif type(event) is Keepalive:
            pipeline.on_keepalive(event.wal_end)  # type: ignore[union-attr]
            if event.reply_requested:  # type: ignore[union-attr]
                source.send_status(pipeline.durable_lsn)
                next_status = time.monotonic() + status_interval
        pipeline.on_tick()
        if time.monotonic() >= next_status:
            source.send_status(pipeline.durable_lsn)
            next_status = time.monotonic() + status_interval
    pipeline.checkpoint()
    source.send_status(pipeline.durable_lsn)
