"""Transactions in, batches out, and the one place that acknowledges the slot.

Many source transactions are batched into one state-database commit (up to
``batch_size`` attributed rows, or ``flush_interval`` seconds after the first
change waiting for it). Attributed rows go to the committer as they come, in
chunks, so a huge source transaction does not accumulate in memory. A
keepalive is an event with a position like any other: it queues behind the
data before it, and acknowledging it moves the slot past WAL that holds
nothing for us.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from streamer.assembler import TransactionAssembler
from streamer.committer import Advance, Commit, Committer, Stage
from streamer.lsn import Lsn
from streamer.source.pgoutput import decode
from streamer.source.replication import Event, XLogData

STAGE_CHUNK = 2000
"""Attributed rows handed to the committer at a time."""


class Source(Protocol):
    def read(self, timeout: float) -> list[Event]: ...
    def send_status(self, flushed: Lsn, reply: bool = False) -> None: ...


class Pipeline:
    """Feeds the assembler and decides when a batch is complete."""

    def __init__(
        self, assembler: TransactionAssembler, committer: Committer, *, batch_size: int, flush_interval: float
    ) -> None:
        self.assembler = assembler
        self.committer = committer
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.handled_lsn = committer.committed_lsn  # everything before it is applied and submitted
        self._submitted_lsn = committer.committed_lsn
        self._batch_rows = 0
        self._batch_dirty = False
        self._batch_started = 0.0

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
                self._advance()  # a transaction that changed nothing we keep
                return
            self._batch_dirty = True
            self._batch_started = time.monotonic()
        if self._batch_rows + len(assembler.records) >= self.batch_size:
            self.checkpoint()

    def on_keepalive(self, wal_end: Lsn) -> None:
        if not self.assembler.in_transaction:
            self.handled_lsn = max(self.handled_lsn, wal_end)
            if not self._batch_dirty:
                self._advance()

    def seconds_until_due(self, idle: float) -> float:
        """How long the reader may wait for data before ``on_tick`` has a batch to commit."""
        if not self._batch_dirty or self.assembler.in_transaction:
            return idle
        return max(0.0, min(idle, self._batch_started + self.flush_interval - time.monotonic()))

    def on_tick(self) -> None:
        """Checkpoint a batch whose first change has waited ``flush_interval``.

        Only between transactions: what is staged then belongs to complete ones.
        """
        if (
            self._batch_dirty
            and not self.assembler.in_transaction
            and time.monotonic() - self._batch_started >= self.flush_interval
        ):
            self.checkpoint()

    def checkpoint(self) -> None:
        """Submit the batch: its last rows, its history versions, its end position."""
        if not self._batch_dirty:
            return
        assert not self.assembler.in_transaction, "checkpoint inside a source transaction"
        self._stage()
        self.committer.submit(Commit(self.assembler.history.take_unsaved(), self.handled_lsn))
        self._submitted_lsn = self.handled_lsn
        self._batch_rows = 0
        self._batch_dirty = False

    def _stage(self) -> None:
        records = self.assembler.records
        if records:
            self.committer.submit(Stage(records))
            self._batch_rows += len(records)
            self.assembler.records = []

    def _advance(self) -> None:
        if self.handled_lsn > self._submitted_lsn:
            self.committer.submit(Advance(self.handled_lsn))
            self._submitted_lsn = self.handled_lsn


def run(source: Source, pipeline: Pipeline, stop: threading.Event, status_interval: float) -> None:
    """Read until ``stop`` is set and the open transaction is complete; then commit it all.

    The slot is acknowledged here and nowhere else, with what the committer has made durable.
    """
    committer = pipeline.committer
    acknowledged = committer.committed_lsn
    next_status = time.monotonic() + status_interval
    while not stop.is_set() or pipeline.assembler.in_transaction:
        reply = False
        for event in source.read(pipeline.seconds_until_due(idle=0.2)):
            if type(event) is XLogData:
                pipeline.on_data(event.data_start, event.payload)
            else:
                pipeline.on_keepalive(event.wal_end)  # type: ignore[union-attr]
                reply = reply or event.reply_requested  # type: ignore[union-attr]
        pipeline.on_tick()
        committer.check()
        durable = committer.committed_lsn
        if durable > acknowledged or reply or time.monotonic() >= next_status:
            source.send_status(durable)
            acknowledged = durable
            next_status = time.monotonic() + status_interval
    pipeline.checkpoint()
    committer.close()
    source.send_status(committer.committed_lsn)
