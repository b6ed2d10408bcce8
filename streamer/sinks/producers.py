"""The small producer interface the Kafka sink needs, with two clients behind it.

``kafka-python`` (pure Python, the default, what our users asked for) and
``confluent`` (librdkafka, ``pip install 'streamer[confluent]'``, ~10x the
throughput on the same broker). Each raises ``SinkUnavailable`` when the
broker does not confirm, and ``ConfigError`` for settings it refuses.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from streamer.config import Settings
from streamer.errors import ConfigError, SinkUnavailable

Headers = list[tuple[str, bytes]]


class Producer(Protocol):
    def send(self, topic: str, key: bytes, value: bytes, headers: Headers | None = None) -> None:
        """Queue one record; a failure may surface here or at the next ``flush``/``commit``."""

    def flush(self) -> None:
        """Every queued record is acknowledged by the broker (acks=all), or raise."""

    def begin_transaction(self) -> None: ...

    def commit_transaction(self) -> None:
        """Every record of the transaction is committed, or raise."""

    def close(self) -> None: ...


def sink_unavailable(action: str, exc: BaseException | str) -> SinkUnavailable:
    return SinkUnavailable(f"Kafka sink blocked: {action} failed: {exc or type(exc).__name__}")


_KAFKA_PYTHON_NAMES = {
    "sasl_mechanism": "sasl_mechanism",
    "sasl_username": "sasl_plain_username",
    "sasl_password": "sasl_plain_password",
    "ssl_cafile": "ssl_cafile",
    "ssl_certfile": "ssl_certfile",
    "ssl_keyfile": "ssl_keyfile",
}
_CONFLUENT_NAMES = {
    "sasl_mechanism": "sasl.mechanism",
    "sasl_username": "sasl.username",
    "sasl_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
}


def _security(settings: Settings, names: dict[str, str]) -> dict[str, str]:
    """The SASL/SSL settings that are set, under one client's names."""
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
    values = {
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_username": settings.kafka_sasl_username,
        "sasl_password": password,
        "ssl_cafile": settings.kafka_ssl_cafile,
        "ssl_certfile": settings.kafka_ssl_certfile,
        "ssl_keyfile": settings.kafka_ssl_keyfile,
    }
    return {names[key]: value for key, value in values.items() if value is not None}


def kafka_python_config(settings: Settings) -> dict[str, Any]:
    """kafka-python connection settings, shared with the admin client and consumers."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
        "client_id": f"streamer-{settings.slot}",
    } | _security(settings, _KAFKA_PYTHON_NAMES)


def transactional_id(settings: Settings) -> str | None:
    if settings.kafka_delivery != "exactly_once":
        return None
    return settings.kafka_transactional_id or f"streamer-{settings.slot}"


class KafkaPythonProducer:
    def __init__(self, settings: Settings) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaConfigurationError, KafkaError

        self._timeout = settings.kafka_delivery_timeout
        self._error: BaseException | None = None
        timeout_ms = int(self._timeout * 1000)
        config = kafka_python_config(settings) | {
            "acks": "all",
            "enable_idempotence": True,
            "compression_type": None if settings.kafka_compression == "none" else settings.kafka_compression,
            "linger_ms": 5,
            "request_timeout_ms": max(1, min(timeout_ms // 2, 30_000)),
            "delivery_timeout_ms": timeout_ms,
            "max_block_ms": timeout_ms,
        }
        if tid := transactional_id(settings):
            config["transactional_id"] = tid
        try:
            self._producer = KafkaProducer(**config)
            if tid:
                self._producer.init_transactions()
        except KafkaConfigurationError as exc:
            raise ConfigError(f"invalid Kafka producer settings: {exc}") from exc
        except KafkaError as exc:
            raise sink_unavailable(f"connecting to {settings.kafka_bootstrap}", exc) from exc

    def send(self, topic: str, key: bytes, value: bytes, headers: Headers | None = None) -> None:
        from kafka.errors import KafkaError

        if self._error is not None:
            raise sink_unavailable("publishing", self._error)
        try:
            future = self._producer.send(topic, key=key, value=value, headers=headers or [])
        except KafkaError as exc:
            raise sink_unavailable(f"sending to {topic}", exc) from exc
        future.add_errback(self._failed)

    def _failed(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc

    def flush(self) -> None:
        self._confirm(lambda: self._producer.flush(timeout=self._timeout))

    def begin_transaction(self) -> None:
        self._confirm(self._producer.begin_transaction)

    def commit_transaction(self) -> None:
        self._confirm(self._producer.commit_transaction)

    def _confirm(self, action: Any) -> None:
        from kafka.errors import KafkaError

        try:
            action()
        except KafkaError as exc:
            raise sink_unavailable("publishing a batch", exc) from exc
        if self._error is not None:
            raise sink_unavailable("publishing a batch", self._error)

    def close(self) -> None:
        self._producer.close(timeout=1)


class ConfluentProducer:
    def __init__(self, settings: Settings) -> None:
        try:
            import confluent_kafka
        except ImportError:
            raise ConfigError("kafka_client=confluent needs confluent-kafka: pip install 'streamer[confluent]'") from None
        self._kafka = confluent_kafka
        self._timeout = settings.kafka_delivery_timeout
        self._error: str | None = None
        config: dict[str, Any] = {
            "bootstrap.servers": settings.kafka_bootstrap,
            "security.protocol": settings.kafka_security_protocol.lower(),
            "client.id": f"streamer-{settings.slot}",
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": settings.kafka_compression,
            "linger.ms": 5,
            "delivery.timeout.ms": int(self._timeout * 1000),
        }
        config |= _security(settings, _CONFLUENT_NAMES)
        if tid := transactional_id(settings):
            config["transactional.id"] = tid
        try:
            self._producer = confluent_kafka.Producer(config, logger=_QuietLogger())
            if tid:
                self._producer.init_transactions(self._timeout)
        except confluent_kafka.KafkaException as exc:
            raise sink_unavailable(f"connecting to {settings.kafka_bootstrap}", exc) from exc
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"invalid Kafka producer settings: {exc}") from exc

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None and self._error is None:
            self._error = str(error)

    def send(self, topic: str, key: bytes, value: bytes, headers: Headers | None = None) -> None:
        if self._error is not None:
            raise sink_unavailable("publishing", self._error)
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self._delivered)
                self._producer.poll(0)
                return
            except BufferError:  # the local queue is full: wait for the broker to catch up
                if time.monotonic() > deadline:
                    raise sink_unavailable(f"sending to {topic}", "local queue full") from None
                self._producer.poll(0.05)
            except self._kafka.KafkaException as exc:
                raise sink_unavailable(f"sending to {topic}", exc) from exc

    def flush(self) -> None:
        left = self._producer.flush(self._timeout)
        if left:
            raise sink_unavailable("publishing a batch", f"{left} records unconfirmed after {self._timeout:.0f}s")
        if self._error is not None:
            raise sink_unavailable("publishing a batch", self._error)

    def begin_transaction(self) -> None:
        self._transact(self._producer.begin_transaction)

    def commit_transaction(self) -> None:
        self._transact(lambda: self._producer.commit_transaction(self._timeout))
        if self._error is not None:
            raise sink_unavailable("publishing a batch", self._error)

    def _transact(self, action: Any) -> None:
        try:
            action()
        except self._kafka.KafkaException as exc:
            raise sink_unavailable("a Kafka transaction", exc) from exc

    def close(self) -> None:
        self._producer.flush(1)


class _QuietLogger:
    """librdkafka logs every broker disconnect at INFO; streamer reports the sink's state itself."""

    def log(self, level: int, message: str, *args: object) -> None:
        import logging

        logging.getLogger("streamer.sinks.confluent").debug(message, *args)


def create_producer(settings: Settings) -> Producer:
    if settings.kafka_client == "confluent":
        return ConfluentProducer(settings)
    return KafkaPythonProducer(settings)
