"""A pure decoder for pgoutput protocol version 1: bytes in, typed messages out.

Every message of protocol 1 is decoded (Begin, Commit, Origin, Relation, Type,
Insert, Update, Delete, Truncate, logical Message). Column values stay raw
``bytes`` (text format), ``None`` for SQL NULL, or ``UNCHANGED`` for an
unchanged TOASTed value, which means "keep the previous value", never NULL.
Anything malformed raises ``DecodeError`` naming the LSN: a message is never
skipped.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from struct import Struct
from struct import error as StructError
from typing import NamedTuple

from streamer.errors import DecodeError
from streamer.lsn import Lsn, format_lsn


class _Unchanged:
    """The value of an unchanged TOASTed column ('u'): keep the previous value."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = _Unchanged()

Value = bytes | None | _Unchanged
Tuple = tuple[Value, ...]

POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


def pg_timestamp(micros: int) -> datetime:
    """Microseconds since 2000-01-01 UTC (the protocol's clock) → aware datetime."""
    return POSTGRES_EPOCH + timedelta(microseconds=micros)


class Begin(NamedTuple):
    final_lsn: Lsn  # the LSN of the transaction's commit record
    commit_time: int  # microseconds since 2000-01-01 UTC
    xid: int


class Commit(NamedTuple):
    flags: int
    commit_lsn: Lsn
    end_lsn: Lsn
    commit_time: int


class Origin(NamedTuple):
    commit_lsn: Lsn
    name: str


class Column(NamedTuple):
    flags: int  # 1 = part of the replica identity key
    name: str
    type_oid: int
    type_modifier: int


class Relation(NamedTuple):
    relation_id: int
    namespace: str
    name: str
    replica_identity: str  # d(efault), n(othing), f(ull), i(ndex)
    columns: tuple[Column, ...]


class Type(NamedTuple):
    type_oid: int
    namespace: str
    name: str


class Insert(NamedTuple):
    relation_id: int
    new: Tuple


class Update(NamedTuple):
    relation_id: int
    old: Tuple | None  # the key ('K') or the full old row ('O'), when sent
    old_is_key_only: bool
    new: Tuple


class Delete(NamedTuple):
    relation_id: int
    old: Tuple
    old_is_key_only: bool


class Truncate(NamedTuple):
    options: int  # 1 = CASCADE, 2 = RESTART IDENTITY
    relation_ids: tuple[int, ...]


class LogicalMessage(NamedTuple):
    transactional: bool
    lsn: Lsn
    prefix: str
    content: bytes


Message = Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | LogicalMessage

_U8 = Struct(">B")
_U16 = Struct(">H")
_U32 = Struct(">I")
_BEGIN = Struct(">QqI")
_COMMIT = Struct(">BQQq")
_COLUMN_TAIL = Struct(">Ii")
_BYTE_N, _BYTE_U, _BYTE_T, _BYTE_B, _BYTE_NEW = b"nutbN"
_INSERT_HEAD = Struct(">IB")  # relation id, tuple tag


class _Reader:
    """A cursor over one message; every read checks bounds."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 1  # past the message type byte

    def unpack(self, fmt: Struct) -> tuple[int, ...]:
        values = fmt.unpack_from(self.buf, self.pos)
        self.pos += fmt.size
        return values

    def u8(self) -> int:
        return self.unpack(_U8)[0]

    def u16(self) -> int:
        return self.unpack(_U16)[0]

    def u32(self) -> int:
        return self.unpack(_U32)[0]

    def cstring(self) -> str:
        end = self.buf.index(0, self.pos)
        text = self.buf[self.pos : end].decode()
        self.pos = end + 1
        return text

    def rest(self) -> bytes:
        data = self.buf[self.pos :]
        self.pos = len(self.buf)
        return data

    def tuple_data(self) -> Tuple:
        values, self.pos = _tuple_data(self.buf, self.pos)
        return values

    def tagged_tuple(self, allowed: bytes) -> tuple[int, Tuple]:
        tag = self.u8()
        if tag not in allowed:
            raise ValueError(f"expected tuple tag in {allowed!r}, got {chr(tag)!r}")
        return tag, self.tuple_data()


def _tuple_data(buf: bytes, pos: int) -> tuple[Tuple, int]:
    """TupleData at ``pos``: the values and the position after them. The hot path, one call
    per row; a slice past the end is caught by the final check."""
    count = (buf[pos] << 8) | buf[pos + 1]
    pos += 2
    values: list[Value] = []
    append = values.append
    unpack_length = _U32.unpack_from
    for _ in range(count):
        kind = buf[pos]
        pos += 1
        if kind == _BYTE_T or kind == _BYTE_B:
            end = pos + 4 + unpack_length(buf, pos)[0]
            append(buf[pos + 4 : end])
            pos = end
        elif kind == _BYTE_N:
            append(None)
        elif kind == _BYTE_U:
            append(UNCHANGED)
        else:
            raise ValueError(f"unknown tuple value kind {chr(kind)!r}")
    if pos > len(buf):
        raise ValueError("column value runs past the end of the message")
    return tuple(values), pos


def _begin(r: _Reader) -> Begin:
    return Begin(*r.unpack(_BEGIN))


def _commit(r: _Reader) -> Commit:
    return Commit(*r.unpack(_COMMIT))


def _origin(r: _Reader) -> Origin:
    (lsn,) = r.unpack(Struct(">Q"))
    return Origin(lsn, r.cstring())


def _relation(r: _Reader) -> Relation:
    relation_id = r.u32()
    namespace = r.cstring()
    name = r.cstring()
    identity = chr(r.u8())
    columns = []
    for _ in range(r.u16()):
        flags = r.u8()
        column_name = r.cstring()
        type_oid, type_modifier = r.unpack(_COLUMN_TAIL)
        columns.append(Column(flags, column_name, type_oid, type_modifier))
    return Relation(relation_id, namespace, name, identity, tuple(columns))


def _type(r: _Reader) -> Type:
    type_oid = r.u32()
    return Type(type_oid, r.cstring(), r.cstring())


def _insert(r: _Reader) -> Insert:
    relation_id, tag = _INSERT_HEAD.unpack_from(r.buf, 1)
    if tag != _BYTE_NEW:
        raise ValueError(f"expected tuple tag 'N', got {chr(tag)!r}")
    new, r.pos = _tuple_data(r.buf, 1 + _INSERT_HEAD.size)
    return Insert(relation_id, new)


def _update(r: _Reader) -> Update:
    relation_id = r.u32()
    tag, values = r.tagged_tuple(b"KON")
    if tag == ord("N"):
        return Update(relation_id, None, False, values)
    _, new = r.tagged_tuple(b"N")
    return Update(relation_id, values, tag == ord("K"), new)


def _delete(r: _Reader) -> Delete:
    relation_id = r.u32()
    tag, old = r.tagged_tuple(b"KO")
    return Delete(relation_id, old, tag == ord("K"))


def _truncate(r: _Reader) -> Truncate:
    count = r.u32()
    options = r.u8()
    return Truncate(options, tuple(r.u32() for _ in range(count)))


def _logical_message(r: _Reader) -> LogicalMessage:
    flags = r.u8()
    (lsn,) = r.unpack(Struct(">Q"))
    prefix = r.cstring()
    length = r.u32()
    content = r.rest()
    if len(content) != length:
        raise ValueError(f"message content is {len(content)} bytes, header says {length}")
    return LogicalMessage(bool(flags & 1), lsn, prefix, content)


_DECODERS = {
    ord("B"): _begin,
    ord("C"): _commit,
    ord("O"): _origin,
    ord("R"): _relation,
    ord("Y"): _type,
    ord("I"): _insert,
    ord("U"): _update,
    ord("D"): _delete,
    ord("T"): _truncate,
    ord("M"): _logical_message,
}


def decode(data: bytes, lsn: Lsn = 0) -> Message:
    """Decode one pgoutput message; ``lsn`` (the XLogData start) names it in errors."""
    if not data:
        raise DecodeError(f"empty pgoutput message at LSN {format_lsn(lsn)}")
    decoder = _DECODERS.get(data[0])
    if decoder is None:
        raise DecodeError(
            f"unknown pgoutput message type {chr(data[0])!r} at LSN {format_lsn(lsn)}: "
            "is the slot using protocol version 1 of pgoutput?"
        )
    reader = _Reader(data)
    try:
        message = decoder(reader)
    except (StructError, ValueError, IndexError, UnicodeDecodeError) as exc:
        raise DecodeError(
            f"malformed pgoutput {chr(data[0])!r} message at LSN {format_lsn(lsn)}: {exc}"
        ) from exc
    if reader.pos != len(data):
        raise DecodeError(
            f"pgoutput {chr(data[0])!r} message at LSN {format_lsn(lsn)} has "
            f"{len(data) - reader.pos} unexpected trailing bytes"
        )
    return message
