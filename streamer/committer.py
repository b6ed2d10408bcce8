"""The durable side of the pipeline, in a thread of its own, so that writing and
committing overlap with decoding.

Operations arrive in stream order through a bounded queue (a full queue stops
the reader: memory stays bounded). The checkpoint order is written down once,
in ``_commit``. ``committed_lsn`` only ever names a position whose data is
durable; the reader acknowledges exactly that to the slot, nothing else.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from streamer.enrich import AttributedRecord
from streamer.lsn import Lsn, format_lsn
from streamer.state.history import VersionChange

log = logging.getLogger(__name__)


class Sink(Protocol):
    def write(self, records: list[AttributedRecord]) -> None:
        """Take rows of the open batch (not yet durable)."""

    def prepare_commit(self, versions: list[VersionChange], lsn: Lsn) -> None:
        """Make the batch durable, or ready to become so with the state database's commit."""


class Store(Protocol):
    def save(self, versions: list[VersionChange], lsn: Lsn) -> None: ...
    def commit(self) -> None: ...


class Stage(NamedTuple):
    """Attributed rows of complete or open source transactions, into the open sink transaction."""

    records: list[AttributedRecord]


class Commit(NamedTuple):
    """Everything staged so far, with these versions, is durable up to ``lsn``."""

    versions: list[VersionChange]
    lsn: Lsn


class Advance(NamedTuple):
    """Nothing to write up to ``lsn`` (a keepalive, or transactions that changed nothing we keep)."""

    lsn: Lsn


Operation = Stage | Commit | Advance

_CLOSE = None


class Committer:
    """Applies operations in order on a thread; errors surface in the reader's thread."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        store: Store,
        committed_lsn: Lsn,
        max_pending: int = 8,
        while_waiting: Callable[[], None] = lambda: None,
    ) -> None:
        self.sinks = sinks
        self.while_waiting = while_waiting  # called by the reader while the queue is full
        self.store = store
        self.committed_lsn = committed_lsn
        self.attributed_rows = 0
        self._staged_rows = 0
        self._queue: queue.Queue[Operation | None] = queue.Queue(max_pending)
        self._error: BaseException | None = None
        self._aborted = False
        self._thread = threading.Thread(target=self._work, name="committer", daemon=True)
        self._thread.start()

    def submit(self, operation: Operation) -> None:
        while True:
            self.check()
            try:
                self._queue.put(operation, timeout=0.5)
                return
            except queue.Full:
                self.while_waiting()

    def check(self) -> None:
        """Re-raise a failure of the committer thread."""
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Apply everything submitted, then stop."""
        if self._thread.is_alive():
            self.submit(_CLOSE)  # type: ignore[arg-type]
            self._thread.join()
        self.check()

    def abort(self, timeout: float = 60) -> None:
        """Stop without applying what is still queued (the reader failed): the open
        transaction is left to roll back. Returns once the thread is done, so no
        commit of this committer can land after a restart has loaded the checkpoint."""
        self._aborted = True
        try:
            self._queue.put_nowait(_CLOSE)
        except queue.Full:
            pass  # the worker sees the flag before its next operation
        self._thread.join(timeout)

    def _work(self) -> None:
        try:
            while (operation := self._queue.get()) is not _CLOSE and not self._aborted:
                if type(operation) is Stage:
                    for sink in self.sinks:
                        sink.write(operation.records)  # type: ignore[union-attr]
                    self._staged_rows += len(operation.records)  # type: ignore[union-attr]
                elif type(operation) is Commit:
                    self._commit(operation)  # type: ignore[arg-type]
                else:
                    self.committed_lsn = max(self.committed_lsn, operation.lsn)  # type: ignore[union-attr]
        except BaseException as exc:  # noqa: BLE001 - handed to the reader thread
            self._error = exc

    def _commit(self, commit: Commit) -> None:
        """The checkpoint, in this order and nowhere else:

        1. every sink completes the batch: Kafka publishes and confirms it (or
           commits its transaction), PostgreSQL merges what it staged;
        2. the new history versions and the checkpoint LSN join the rows;
        3. one state-database commit makes rows, versions and checkpoint durable;
        4. only then may the slot be acknowledged up to the LSN: every sink
           holds everything before it.
        """
        for sink in self.sinks:
            sink.prepare_commit(commit.versions, commit.lsn)
        self.store.save(commit.versions, commit.lsn)
        self.store.commit()
        self.attributed_rows += self._staged_rows
        log.debug("checkpoint %s: %d rows", format_lsn(commit.lsn), self._staged_rows)
        self._staged_rows = 0
        self.committed_lsn = commit.lsn
