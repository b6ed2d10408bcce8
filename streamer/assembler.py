"""Decoded pgoutput messages → history changes and attributed records. Pure.

It tracks the Relation messages (re-sent after ``ALTER TABLE``, so column
positions are looked up again each time), the transaction being read (its
commit LSN is known from Begin, so every change gets its final position), and
skips transactions the checkpoint already covers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from streamer.enrich import SPEND_COLUMNS, AttributedRecord, CommitInfo, SpendRow, attribute
from streamer.errors import DecodeError
from streamer.lsn import Lsn, format_lsn
from streamer.source.pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    Delete,
    Insert,
    Message,
    Relation,
    Truncate,
    Tuple,
    Update,
    Value,
    pg_timestamp,
)
from streamer.state.history import KEEP, History, Position
from streamer.tables import BY_NAME, SPEND_LOGS, WatchedTable


class _Binding(NamedTuple):
    """A watched table as the current Relation message lays it out."""

    table: WatchedTable
    id_index: int
    value_indexes: Mapping[str, int]  # history field → column index
    spend_indexes: tuple[int | None, ...]  # SpendRow field → column index (None: no such column)


def _bind(relation: Relation, table: WatchedTable) -> _Binding:
    index = {column.name: i for i, column in enumerate(relation.columns)}
    if table.id_column not in index:
        raise DecodeError(
            f'table "{relation.name}" has no column "{table.id_column}": not a LiteLLM schema streamer knows'
        )
    if table.entity is None:
        return _Binding(table, index[table.id_column], {}, tuple(map(index.get, SPEND_COLUMNS.values())))
    wanted = {name: index[name] for name in table.entity.columns if name in index}
    return _Binding(table, index[table.id_column], wanted, ())


def _text(value: Value) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes) else None


class TransactionAssembler:
    """Feeds decoded messages into the history; collects attributed records."""

    def __init__(self, history: History, source_schema: str, resume_after: Lsn) -> None:
        self.history = history
        self.source_schema = source_schema
        self.resume_after = resume_after
        self.records: list[AttributedRecord] = []
        self.in_transaction = False
        self._bindings: dict[int, _Binding | None] = {}
        self._skipping = False
        self._commit_lsn: Lsn = 0
        self._commit = CommitInfo(format_lsn(0), pg_timestamp(0).isoformat())
        self._seq = 0

    def feed(self, message: Message, lsn: Lsn) -> Commit | None:
        """Apply one message; returns the Commit of a transaction that was applied."""
        kind = type(message)
        if kind is Insert or kind is Update or kind is Delete:
            if not self._skipping:
                self._change(message, lsn)  # type: ignore[arg-type]
        elif kind is Begin:
            self._begin(message)  # type: ignore[arg-type]
        elif kind is Commit:
            self.in_transaction = False
            if not self._skipping:
                return message  # type: ignore[return-value]
        elif kind is Relation:
            relation: Relation = message  # type: ignore[assignment]
            table = BY_NAME.get(relation.name) if relation.namespace == self.source_schema else None
            self._bindings[relation.relation_id] = _bind(relation, table) if table else None
        elif kind is Truncate and not self._skipping:
            self._truncate(message, lsn)  # type: ignore[arg-type]
        return None  # Origin, Type, logical messages: nothing to attribute

    def _begin(self, begin: Begin) -> None:
        self.in_transaction = True
        self._skipping = begin.final_lsn < self.resume_after
        self._commit_lsn = begin.final_lsn
        self._commit = CommitInfo(format_lsn(begin.final_lsn), pg_timestamp(begin.commit_time).isoformat())
        self._seq = 0

    def _position(self) -> Position:
        self._seq += 1
        return (self._commit_lsn, self._seq)

    def _binding(self, relation_id: int, lsn: Lsn) -> _Binding | None:
        try:
            return self._bindings[relation_id]
        except KeyError:
            raise DecodeError(
                f"change for relation {relation_id} at LSN {format_lsn(lsn)} arrived before its Relation message"
            ) from None

    def _change(self, change: Insert | Update | Delete, lsn: Lsn) -> None:
        binding = self._binding(change.relation_id, lsn)
        if binding is None:
            return
        table = binding.table
        if table.entity is None:
            if type(change) is not Delete:  # a deleted spend log keeps its attribution
                self._attribute(binding, change.new)  # type: ignore[union-attr]
            return
        if type(change) is Insert:
            entity_id = self._id(binding, change.new[binding.id_index], lsn)
            values = self._values(binding, change.new)
            if table.archive:
                self.history.archive(table.entity, entity_id, values, self._position())
            else:
                self.history.upsert(table.entity, entity_id, values, self._position())
        elif table.archive:
            return  # archive rows edited or purged: history keeps what they said
        elif type(change) is Update:
            self._update(binding, change, lsn)  # type: ignore[arg-type]
        else:
            delete: Delete = change  # type: ignore[assignment]
            old = None if delete.old_is_key_only else self._values(binding, delete.old)
            self.history.delete(table.entity, self._id(binding, delete.old[binding.id_index], lsn), old, self._position())

    def _update(self, binding: _Binding, update: Update, lsn: Lsn) -> None:
        entity = binding.table.entity
        assert entity is not None
        values = self._values(binding, update.new)
        new_id = update.new[binding.id_index]
        old_id = update.old[binding.id_index] if update.old is not None else None
        if new_id is UNCHANGED:
            new_id = old_id
        entity_id = self._id(binding, new_id, lsn)
        if isinstance(old_id, bytes) and old_id != new_id:
            self.history.move(entity, self._id(binding, old_id, lsn), entity_id, values, self._position())
        else:
            self.history.upsert(entity, entity_id, values, self._position())

    def _truncate(self, truncate: Truncate, lsn: Lsn) -> None:
        for relation_id in truncate.relation_ids:
            binding = self._binding(relation_id, lsn)
            if binding and binding.table.entity is not None and not binding.table.archive:
                self.history.delete_all(binding.table.entity, self._position())

    def _attribute(self, binding: _Binding, new: Tuple) -> None:
        *text_indexes, metadata_index = binding.spend_indexes
        metadata = new[metadata_index] if metadata_index is not None else None
        row = SpendRow(
            *[None if index is None else _text(new[index]) for index in text_indexes],
            metadata if type(metadata) is bytes else None,  # parsed only if attribution needs it
        )
        if row.request_id is None:
            raise DecodeError(f"{SPEND_LOGS.name} row without request_id in transaction {format_lsn(self._commit_lsn)}")
        if row.api_key is None:
            row = row._replace(api_key="")
        self.records.append(attribute(row, self.history, self._position(), self._commit))

    @staticmethod
    def _values(binding: _Binding, values: Tuple) -> dict[str, object]:
        return {
            name: KEEP if values[index] is UNCHANGED else _text(values[index])
            for name, index in binding.value_indexes.items()
        }

    @staticmethod
    def _id(binding: _Binding, value: Value, lsn: Lsn) -> str:
        if not isinstance(value, bytes):
            raise DecodeError(
                f'{binding.table.name} change at LSN {format_lsn(lsn)} has no "{binding.table.id_column}" value'
            )
        return value.decode(errors="replace")
