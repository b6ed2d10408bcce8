"""The decoder on bytes captured from a real PostgreSQL 15 (see fixtures/capture_pgoutput.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.errors import DecodeError
from streamer.lsn import format_lsn, parse_lsn
from streamer.source.pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    Relation,
    Truncate,
    Type,
    Update,
    decode,
    pg_timestamp,
)

CAPTURE = [
    (parse_lsn(m["lsn"]), bytes.fromhex(m["hex"]))
    for m in json.loads((Path(__file__).parents[1] / "fixtures" / "pgoutput_capture.json").read_text())
]
MESSAGES = [decode(data, lsn) for lsn, data in CAPTURE]


def of_type(kind: type) -> list:
    return [m for m in MESSAGES if type(m) is kind]


def test_every_protocol_1_message_type_is_captured_and_decoded() -> None:
    kinds = {type(m) for m in MESSAGES}
    assert kinds == {Begin, Commit, Origin, Relation, Type, Insert, Update, Delete, Truncate, LogicalMessage}


def test_begin_and_commit_agree_on_the_commit_lsn() -> None:
    begins, commits = of_type(Begin), of_type(Commit)
    assert len(begins) == len(commits) > 5
    for begin, commit in zip(begins, commits):
        assert begin.final_lsn == commit.commit_lsn < commit.end_lsn
        assert begin.commit_time == commit.commit_time
        assert pg_timestamp(commit.commit_time).year >= 2024


def test_relation_lists_columns_with_key_flags_and_identity() -> None:
    keys = next(r for r in of_type(Relation) if r.name == "keys")
    assert keys.namespace == "public"
    assert keys.replica_identity == "d"
    assert [(c.name, c.flags) for c in keys.columns] == [
        ("token", 1), ("alias", 0), ("team", 0), ("big", 0), ("feeling", 0)
    ]
    assert keys.columns[0].type_oid == 25  # text
    full = next(r for r in of_type(Relation) if r.name == "full_rows")
    assert full.replica_identity == "f"


def test_relation_is_resent_after_alter_table() -> None:
    layouts = [tuple(c.name for c in r.columns) for r in of_type(Relation) if r.name == "keys"]
    assert layouts[-1][-1] == "extra" and "extra" not in layouts[0]
    assert of_type(Insert)[-2].new == (b"k4", None, None, None, None, b"7")


def test_type_message_for_a_custom_enum() -> None:
    assert of_type(Type)[0][1:] == ("public", "mood")


def test_insert_values_and_nulls() -> None:
    first = of_type(Insert)[0]
    assert first.new[:3] == (b"k1", b"alpha", b"t1") and first.new[4] == b"happy"
    assert len(first.new[3]) == 32 * 400
    assert of_type(Insert)[1].new == (b"k3", None, None, None, None)


def test_unchanged_toast_is_not_null() -> None:
    update = of_type(Update)[0]
    assert update.old is None
    assert update.new == (b"k1", b"alpha", b"t2", UNCHANGED, b"happy")


def test_update_of_the_key_sends_the_old_key() -> None:
    rotation = of_type(Update)[1]
    assert rotation.old_is_key_only and rotation.old == (b"k1", None, None, None, None)
    assert rotation.new[0] == b"k2"


def test_full_identity_sends_old_rows() -> None:
    update = of_type(Update)[2]
    assert (update.old, update.old_is_key_only, update.new) == ((b"1", b"one"), False, (b"1", b"uno"))
    deletes = of_type(Delete)
    assert (deletes[0].old, deletes[0].old_is_key_only) == ((b"k3", None, None, None, None), True)
    assert (deletes[1].old, deletes[1].old_is_key_only) == ((b"1", b"uno"), False)


def test_truncate_names_every_relation() -> None:
    (truncate,) = of_type(Truncate)
    relations = {r.relation_id: r.name for r in of_type(Relation)}
    assert sorted(relations[i] for i in truncate.relation_ids) == ["full_rows", "keys"]


def test_logical_messages_and_origin() -> None:
    transactional, plain = of_type(LogicalMessage)
    assert (transactional.transactional, transactional.prefix, transactional.content) == (True, "streamer", b"hello")
    assert (plain.transactional, plain.content) == (False, b"not transactional")
    (origin,) = of_type(Origin)
    assert (origin.name, origin.commit_lsn) == ("upstream", 0xAB)


@pytest.mark.parametrize(("lsn", "data"), CAPTURE[:12])
def test_every_truncation_is_a_decode_error_naming_the_lsn(lsn: int, data: bytes) -> None:
    for cut in range(len(data)):
        with pytest.raises(DecodeError, match=format_lsn(lsn)):
            decode(data[:cut], lsn)


def test_unknown_message_type() -> None:
    with pytest.raises(DecodeError, match=r"unknown pgoutput message type 'Z' at LSN 0/10"):
        decode(b"Z\x00", 16)


def test_trailing_bytes_are_an_error() -> None:
    lsn, data = CAPTURE[0]
    with pytest.raises(DecodeError, match="trailing"):
        decode(data + b"\x00", lsn)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    try:
        decode(data, 1)
    except DecodeError:
        pass


@settings(max_examples=2000, deadline=None)
@given(st.sampled_from(CAPTURE), st.data())
def test_corrupted_captures_raise_only_decode_error(capture: tuple[int, bytes], data: st.DataObject) -> None:
    lsn, original = capture
    raw = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(raw), lsn)
    except DecodeError:
        pass
