"""The Kafka sink's batch protocol, on a producer that records calls (the broker itself is
exercised in tests/integration/test_kafka.py)."""

from __future__ import annotations

import json

import pytest

import streamer.sinks.kafka as kafka_sink
from streamer.config import load_settings
from streamer.enrich import AttributedRecord
from streamer.lsn import format_lsn
from streamer.sinks.kafka import KafkaSink
from streamer.state.history import Entity, KeyVersion, TeamVersion, VersionChange


class RecordingProducer:
    def __init__(self, settings: object) -> None:
        self.calls: list[tuple] = []

    def send(self, topic: str, key: bytes, value: bytes, headers: list | None = None) -> None:
        self.calls.append(("send", topic, key.decode(), json.loads(value), dict(headers or [])))

    def flush(self) -> None:
        self.calls.append(("flush",))

    def begin_transaction(self) -> None:
        self.calls.append(("begin",))

    def commit_transaction(self) -> None:
        self.calls.append(("commit",))

    def close(self) -> None:
        pass


def record(request_id: str, lsn: int) -> AttributedRecord:
    return AttributedRecord(request_id, "k", "alias", "sk-...1", "t", "Team", None, None, "u", "0.5", "gpt",
                            "2026-01-01 00:00:00", "key_history", None, format_lsn(lsn), "2026-01-01T00:00:00+00:00")


@pytest.fixture
def sink_for(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(kafka_sink, "create_producer", RecordingProducer)

    def make(delivery: str, skip_through: int | None = None) -> tuple[KafkaSink, RecordingProducer]:
        settings = load_settings(kafka_bootstrap="x:9092", kafka_delivery=delivery, slot="s")
        sink = KafkaSink(settings, skip_through)
        return sink, sink._producer  # type: ignore[return-value]

    return make


def test_at_least_once_publishes_records_then_versions_then_flushes(sink_for) -> None:  # type: ignore[no-untyped-def]
    sink, producer = sink_for("at_least_once")
    sink.write([record("r1", 100)])
    versions = [
        VersionChange(Entity.KEY, "k", (100, 1), KeyVersion("alias", None, "t", None, None, True, None)),
        VersionChange(Entity.TEAM, "t", (100, 2), TeamVersion("Team", None, False)),
        VersionChange(Entity.ORGANIZATION, "o", (100, 3), Entity.ORGANIZATION.empty),
    ]
    sink.prepare_commit(versions, 200)
    kinds = [(c[0], c[1] if len(c) > 1 else None) for c in producer.calls]
    assert kinds == [
        ("send", "litellm.spend.attributed"), ("send", "litellm.key.attribution"),
        ("send", "litellm.team.attribution"), ("flush", None),
    ]
    _, _, key, value, headers = producer.calls[0]
    assert key == "r1" and value["spend"] == 0.5 and value["schema_version"] == 1
    assert headers == {"commit_lsn": b"0/64", "attribution_source": b"key_history"}
    assert producer.calls[1][3]["deleted"] is True  # a deleted key keeps a value


def test_exactly_once_wraps_each_batch_with_its_checkpoint(sink_for) -> None:  # type: ignore[no-untyped-def]
    sink, producer = sink_for("exactly_once")
    sink.write([record("r1", 100)])
    sink.prepare_commit([], 200)
    sink.prepare_commit([], 300)  # an idle batch still commits its position
    assert [c[0] for c in producer.calls] == ["begin", "send", "send", "commit", "begin", "send", "commit"]
    assert producer.calls[2][1:4] == ("litellm.streamer.checkpoints", "s", {"slot": "s", "lsn": "0/C8"})


def test_exactly_once_restart_skips_what_kafka_already_committed(sink_for) -> None:  # type: ignore[no-untyped-def]
    sink, producer = sink_for("exactly_once", skip_through=200)
    sink.write([record("old", 150), record("new", 250)])
    sink.prepare_commit([], 300)
    published = [c[2] for c in producer.calls if c[0] == "send" and c[1] == "litellm.spend.attributed"]
    assert published == ["new"]
    sink.write([record("later", 350)])
    sink.prepare_commit([], 400)
    assert [c[2] for c in producer.calls if c[0] == "send" and c[1] == "litellm.spend.attributed"] == ["new", "later"]


def test_exactly_once_batch_entirely_below_the_kafka_checkpoint_is_not_republished(sink_for) -> None:  # type: ignore[no-untyped-def]
    sink, producer = sink_for("exactly_once", skip_through=500)
    sink.write([record("old", 150)])
    sink.prepare_commit([VersionChange(Entity.TEAM, "t", (150, 1), TeamVersion("Team", None, False))], 500)
    assert producer.calls == []
