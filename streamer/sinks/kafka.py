"""Attributed records and the key/team attribution changelog to Kafka, with kafka-python.

Topics: ``litellm.spend.attributed`` (key ``request_id``), and the compacted
``litellm.key.attribution`` / ``litellm.team.attribution`` (key = token /
team_id, value = the latest version; deleted and rotated entries keep a value,
never a null tombstone, so downstream lookups survive deletes).

Delivery, per batch and always before the PostgreSQL commit that moves the
checkpoint (so the slot is acknowledged only up to what both sinks hold):

- ``at_least_once``: idempotent producer, ``acks=all``; the batch is flushed
  and every send confirmed. After a crash the batch since the checkpoint is
  published again: consumers deduplicate on the record key.
- ``exactly_once``: a transactional producer writes the batch and a checkpoint
  record (slot → end LSN) in one Kafka transaction. On restart the last
  committed checkpoint is read back and records at or below it are not
  published again; ``read_committed`` consumers see each record once.

A broker that does not confirm within ``kafka_delivery_timeout`` raises
``SinkUnavailable``: nothing of that batch is committed or acknowledged, and
the stream restarts from the checkpoint once the broker answers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from streamer.config import Settings
from streamer.enrich import AttributedRecord
from streamer.errors import StreamerError
from streamer.lsn import Lsn, format_lsn, parse_lsn
from streamer.records import key_value, spend_value, team_value
from streamer.sinks.producers import create_producer, kafka_python_config, sink_unavailable
from streamer.state.history import Entity, KeyVersion, TeamVersion, VersionChange

log = logging.getLogger(__name__)


def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics; an existing topic with an incompatible config is an error."""
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    wanted = {
        settings.kafka_spend_topic: (settings.kafka_partitions, "delete"),
        settings.kafka_key_topic: (settings.kafka_partitions, "compact"),
        settings.kafka_team_topic: (settings.kafka_partitions, "compact"),
    }
    if settings.kafka_delivery == "exactly_once":
        wanted[settings.kafka_checkpoint_topic] = (1, "compact")
    try:
        admin = KafkaAdminClient(**kafka_python_config(settings), request_timeout_ms=10_000)
    except KafkaError as exc:
        raise sink_unavailable(f"connecting to {settings.kafka_bootstrap}", exc) from exc
    try:
        existing = set(admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            try:
                admin.create_topics(
                    [
                        NewTopic(name, wanted[name][0], settings.kafka_replication_factor,
                                 topic_configs={"cleanup.policy": wanted[name][1]})
                        for name in missing
                    ]
                )
            except TopicAlreadyExistsError:
                pass  # another streamer created it meanwhile
        for name in wanted.keys() - set(missing):
            described = admin.describe_configs([ConfigResource("TOPIC", name)], config_filter="all")
            policy = _config_value(described, name, "cleanup.policy")
            if policy is not None and wanted[name][1] not in policy.split(","):
                raise StreamerError(
                    f"Kafka topic {name!r} has cleanup.policy={policy}, streamer needs {wanted[name][1]}: "
                    "change the topic's config or choose another topic name"
                )
        return missing
    except KafkaError as exc:
        raise sink_unavailable("creating topics", exc) from exc
    finally:
        admin.close()


def _config_value(described: Any, topic: str, key: str) -> str | None:
    """The value of ``key`` in kafka-python's describe_configs answer, if the broker reported it."""
    entry = (described or {}).get("topic", {}).get(topic, {}).get(key)
    if isinstance(entry, dict):
        value = entry.get("value")
        return str(value) if value is not None else None
    return str(entry) if entry is not None else None


def read_checkpoint(settings: Settings, idle_polls: int = 3) -> Lsn | None:
    """exactly_once: the end LSN of the last Kafka transaction committed for this slot."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(
            **kafka_python_config(settings),
            isolation_level="read_committed",
            enable_auto_commit=False,
            group_id=None,
        )
        partitions = [TopicPartition(settings.kafka_checkpoint_topic, p)
                      for p in consumer.partitions_for_topic(settings.kafka_checkpoint_topic) or {0}]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        found: Lsn | None = None
        empty = 0
        while empty < idle_polls:  # read to the end; not by end offsets, which some brokers misreport
            batch = consumer.poll(timeout_ms=300)
            empty = 0 if batch else empty + 1
            for records in batch.values():
                for record in records:
                    if record.key == settings.slot.encode():
                        found = parse_lsn(json.loads(record.value)["lsn"])
        consumer.close()
        return found
    except KafkaError as exc:
        raise sink_unavailable("reading the checkpoint topic", exc) from exc


class KafkaSink:
    """Publishes each batch before the state database commits it."""

    def __init__(self, settings: Settings, skip_through: Lsn | None = None) -> None:
        self.settings = settings
        self._exactly_once = settings.kafka_delivery == "exactly_once"
        self._skip_through = skip_through  # exactly_once: Kafka already holds transactions below it
        self._in_transaction = False
        self._producer = create_producer(settings)

    def write(self, records: Sequence[AttributedRecord]) -> None:
        if self._skip_through is not None:
            records = [r for r in records if parse_lsn(r.commit_lsn) >= self._skip_through]
        if not records:
            return
        self._begin()
        topic, send = self.settings.kafka_spend_topic, self._producer.send
        for record in records:
            headers = [("commit_lsn", record.commit_lsn.encode()), ("attribution_source", record.attribution_source.encode())]
            send(topic, record.request_id.encode(), spend_value(record), headers)

    def prepare_commit(self, versions: list[VersionChange], lsn: Lsn) -> None:
        """Publish the batch's versions and make everything durable in Kafka (before the PG commit)."""
        if self._skip_through is not None and lsn <= self._skip_through:
            return  # this batch is already in Kafka (exactly_once restart)
        self._skip_through = None
        self._begin()
        for change in versions:
            valid_from = format_lsn(change.position[0])
            if change.entity is Entity.KEY:
                assert isinstance(change.version, KeyVersion)
                value = key_value(change.entity_id, change.version, valid_from)
                self._producer.send(self.settings.kafka_key_topic, change.entity_id.encode(), value)
            elif change.entity is Entity.TEAM:
                assert isinstance(change.version, TeamVersion)
                value = team_value(change.entity_id, change.version, valid_from)
                self._producer.send(self.settings.kafka_team_topic, change.entity_id.encode(), value)
        if self._exactly_once:
            checkpoint = json.dumps({"slot": self.settings.slot, "lsn": format_lsn(lsn)}).encode()
            self._producer.send(self.settings.kafka_checkpoint_topic, self.settings.slot.encode(), checkpoint)
            self._producer.commit_transaction()
            self._in_transaction = False
        else:
            self._producer.flush()

    def close(self) -> None:
        try:
            self._producer.close()
        except Exception:  # noqa: BLE001 - closing after a failure
            log.debug("Kafka producer did not close cleanly", exc_info=True)

    def _begin(self) -> None:
        if self._exactly_once and not self._in_transaction:
            self._producer.begin_transaction()
            self._in_transaction = True
