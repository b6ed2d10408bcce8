"""The Kafka sink end to end, through a real Kafka-protocol broker."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import psycopg
import pytest

from streamer.litellm import (
    RandomWorkload,
    add_key,
    add_team,
    delete_key,
    delete_team,
    key_hash,
    rename_team,
    rotate_key,
    spend_row,
    write_spend,
)
from streamer.records import KeyAttribution, SpendAttributed, TeamAttribution
from tests.conftest import LiteLLMDatabase, RunningStreamer
from tests.kafka_support import TANSU_GAP, Broker, consume_all, latest_values

K1, K2, K3 = key_hash("sk-k1"), key_hash("sk-k2"), key_hash("sk-k3")


def topics(prefix: str) -> dict[str, str]:
    return {
        "kafka_spend_topic": f"{prefix}.spend",
        "kafka_key_topic": f"{prefix}.keys",
        "kafka_team_topic": f"{prefix}.teams",
        "kafka_checkpoint_topic": f"{prefix}.checkpoints",
    }


def kafka_settings(db: LiteLLMDatabase, broker: Broker, **extra: Any) -> dict[str, Any]:
    return {"kafka_bootstrap": broker.bootstrap, "kafka_delivery_timeout": 5.0, **topics(db.name), **extra}


def as_env(settings: dict[str, Any]) -> dict[str, str]:
    return {f"STREAMER_{key.upper()}": str(value) for key, value in settings.items()}


def spend_records(broker: Broker, topic: str, isolation_level: str = "read_uncommitted") -> list[Any]:
    return consume_all(broker.bootstrap, topic, isolation_level)


@pytest.mark.parametrize(
    ("client", "delivery"),
    [("kafka-python", "at_least_once"), ("kafka-python", "exactly_once"), ("confluent", "at_least_once"),
     ("confluent", "exactly_once")],
)
def test_records_equal_postgres_rows_and_changelogs_equal_state(
    litellm: LiteLLMDatabase, broker: Broker, client: str, delivery: str
) -> None:
    settings = kafka_settings(litellm, broker, kafka_delivery=delivery, kafka_client=client)
    running = RunningStreamer(litellm, litellm.settings(**settings))
    try:
        add_team(litellm.conn, "team-a", "Alpha")
        add_team(litellm.conn, "team-b", "Beta")
        add_key(litellm.conn, K1, "doomed", "team-a")
        add_key(litellm.conn, K2, "rotating", "team-b")
        write_spend(litellm.conn, [spend_row("r1", K1), spend_row("r2", K2)])
        delete_key(litellm.conn, K1)
        write_spend(litellm.conn, [spend_row("late", K1, spend=0.25)])  # lands after its key's delete
        rotate_key(litellm.conn, K2, K3)
        rename_team(litellm.conn, "team-b", "Beta 2")
        write_spend(litellm.conn, [spend_row("r3", K3), spend_row("r4", "")])
        delete_team(litellm.conn, "team-a")
        running.catch_up()
    finally:
        running.stop()

    records = spend_records(broker, settings["kafka_spend_topic"])
    values = {r.key.decode(): SpendAttributed.model_validate_json(r.value) for r in records}
    assert values["late"].team_alias == "Alpha" and values["late"].key_alias == "doomed"
    assert values["late"].attribution_source == "key_history"
    headers = {r.key.decode(): dict(r.headers) for r in records}
    assert headers["late"]["attribution_source"] == b"key_history"
    assert headers["late"]["commit_lsn"] == values["late"].commit_lsn.encode()

    rows = litellm.execute(
        "SELECT request_id, api_key, key_alias, key_name, team_id, team_alias, organization_id, organization_alias, "
        "user_id, spend, model, start_time::text, attribution_source, unattributed_reason, commit_lsn::text "
        "FROM litellm_attribution.spend_attribution"
    )
    published = {
        key: (key, v.api_key, v.key_alias, v.key_name, v.team_id, v.team_alias, v.organization_id,
              v.organization_alias, v.user_id, v.spend, v.model, v.start_time, v.attribution_source,
              v.unattributed_reason, v.commit_lsn)
        for key, v in values.items()
    }
    assert published == {row[0]: row for row in rows}
    if delivery == "exactly_once" or broker.real_kafka:
        assert len(records) == len(rows)  # nothing doubled

    keys = {t: KeyAttribution.model_validate(v) for t, v in latest_values(broker.bootstrap, settings["kafka_key_topic"]).items()}
    state_keys = litellm.execute(
        "SELECT DISTINCT ON (token) token, key_alias, team_id, deleted, rotated_to FROM litellm_attribution.key_versions "
        "ORDER BY token, valid_from DESC, seq DESC"
    )
    assert {t: (k.key_alias, k.team_id, k.deleted, k.rotated_to) for t, k in keys.items()} == {
        row[0]: row[1:] for row in state_keys
    }
    assert (keys[K1].deleted, keys[K2].rotated_to, keys[K3].deleted) == (True, K3, False)

    teams = {t: TeamAttribution.model_validate(v) for t, v in latest_values(broker.bootstrap, settings["kafka_team_topic"]).items()}
    assert {t: (v.team_alias, v.deleted) for t, v in teams.items()} == {"team-a": ("Alpha", True), "team-b": ("Beta 2", False)}


def start_streamer(db: LiteLLMDatabase, settings: dict[str, Any]) -> subprocess.Popen[bytes]:
    env = os.environ | as_env({"source_dsn": db.dsn, "slot": db.slot, "batch_size": 250, "flush_interval": 0.05} | settings)
    return subprocess.Popen([sys.executable, "-m", "streamer", "run"], env=env, stderr=subprocess.PIPE)


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_kill_9_under_load_loses_no_record(litellm: LiteLLMDatabase, broker: Broker, delivery: str) -> None:
    if delivery == "exactly_once" and not broker.real_kafka:
        pytest.skip(TANSU_GAP)
    settings = kafka_settings(litellm, broker, kafka_delivery=delivery)
    env = os.environ | as_env({"source_dsn": litellm.dsn, "slot": litellm.slot} | settings)
    assert subprocess.run([sys.executable, "-m", "streamer", "setup"], env=env, capture_output=True).returncode == 0

    def play() -> None:
        with psycopg.connect(litellm.dsn, autocommit=True) as conn:
            for operation in RandomWorkload(seed=11, batches=80).operations():
                operation(conn)
                time.sleep(0.03)

    writer = threading.Thread(target=play)
    process = start_streamer(litellm, settings)
    writer.start()
    rnd = random.Random(5)
    kills = 0
    while kills < 5 or writer.is_alive():
        time.sleep(rnd.uniform(0.6, 1.5))
        assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        process = start_streamer(litellm, settings)
    writer.join()
    try:
        litellm.wait_confirmed(litellm.current_lsn(), timeout=90)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)

    isolation = "read_committed" if delivery == "exactly_once" else "read_uncommitted"
    published = [r.key.decode() for r in spend_records(broker, settings["kafka_spend_topic"], isolation)]
    expected = {row[0] for row in litellm.execute('SELECT request_id FROM "LiteLLM_SpendLogs"')}
    assert len(expected) == 8000
    assert set(published) == expected  # every request_id present
    if delivery == "exactly_once":
        assert len(published) == len(expected)  # and each once


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_broker_outage_resumes_without_gap_and_never_acks_past_published(
    litellm: LiteLLMDatabase, broker: Broker, client: str
) -> None:
    if broker.embedded is None:
        pytest.skip("stops and restarts the broker: runs against the embedded Tansu only")
    settings = kafka_settings(litellm, broker, kafka_delivery_timeout=3.0, kafka_client=client)
    env = os.environ | as_env({"source_dsn": litellm.dsn, "slot": litellm.slot} | settings)
    add_team(litellm.conn, "team-a", "Alpha")
    add_key(litellm.conn, K1, "k", "team-a")
    process = start_streamer(litellm, settings)
    stop = threading.Event()
    written = 0

    def keep_writing() -> None:
        nonlocal written
        with psycopg.connect(litellm.dsn, autocommit=True) as conn:
            while not stop.is_set():
                write_spend(conn, [spend_row(f"o{written + i:06d}", K1) for i in range(20)])
                written += 20
                time.sleep(0.05)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        time.sleep(2)
        broker.embedded.stop()  # in memory: everything published so far is gone with it
        time.sleep(2)
        acked_when_down = litellm.execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (litellm.slot,)
        )[0][0]
        positions = set()
        deadline = time.monotonic() + 8
        blocked = False
        while time.monotonic() < deadline:
            positions.add(litellm.execute(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (litellm.slot,)
            )[0][0])
            status = json.loads(subprocess.run([sys.executable, "-m", "streamer", "status", "--json"], env=env,
                                               capture_output=True, text=True).stdout)
            blocked = blocked or status["sinks"].get("kafka", {}).get("state") == "blocked"
            time.sleep(0.5)
        assert positions == {acked_when_down}, "the slot moved while the broker was down"
        assert blocked, "status never showed the Kafka sink as blocked"
        broker.embedded.start()  # same port, empty
        time.sleep(3)
        stop.set()
        writer.join()
        litellm.wait_confirmed(litellm.current_lsn(), timeout=90)
    finally:
        stop.set()
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    assert process.returncode == 0, process.stderr.read().decode()  # type: ignore[union-attr]

    republished = {r.key.decode() for r in spend_records(broker, settings["kafka_spend_topic"])}
    after_ack = {
        row[0]
        for row in litellm.execute(
            "SELECT request_id FROM litellm_attribution.spend_attribution WHERE commit_lsn >= %s::pg_lsn",
            (acked_when_down,),
        )
    }
    assert len(after_ack) > 0 and written > 0
    assert after_ack <= republished  # nothing after the last acknowledged position is missing
    status = json.loads(subprocess.run([sys.executable, "-m", "streamer", "status", "--json"], env=env,
                                       capture_output=True, text=True).stdout)
    assert status["sinks"]["kafka"]["state"] == "ok"


def test_incompatible_existing_topic_is_a_clear_error(litellm: LiteLLMDatabase, broker: Broker) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    settings = kafka_settings(litellm, broker)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic(settings["kafka_key_topic"], 1, 1, topic_configs={"cleanup.policy": "delete"})])
    admin.close()
    env = os.environ | as_env({"source_dsn": litellm.dsn, "slot": litellm.slot} | settings)
    result = subprocess.run([sys.executable, "-m", "streamer", "setup"], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "cleanup.policy=delete" in result.stderr and settings["kafka_key_topic"] in result.stderr


def test_exactly_once_checkpoint_record_matches_and_restart_republishes_nothing(
    litellm: LiteLLMDatabase, broker: Broker
) -> None:
    settings = kafka_settings(litellm, broker, kafka_delivery="exactly_once")
    add_team(litellm.conn, "team-a", "Alpha")
    add_key(litellm.conn, K1, "k", "team-a")
    for round_ in range(2):  # two clean runs: the second reads the first's Kafka checkpoint back
        running = RunningStreamer(litellm, litellm.settings(**settings))
        try:
            write_spend(litellm.conn, [spend_row(f"r{round_}-{i}", K1) for i in range(30)])
            running.catch_up()
        finally:
            running.stop()
    checkpoints = [json.loads(r.value) for r in consume_all(broker.bootstrap, settings["kafka_checkpoint_topic"])]
    assert checkpoints and checkpoints[-1]["slot"] == litellm.slot
    assert checkpoints[-1]["lsn"] == litellm.execute("SELECT lsn::text FROM litellm_attribution.checkpoint")[0][0]
    published = [r.key.decode() for r in spend_records(broker, settings["kafka_spend_topic"])]
    assert sorted(published) == sorted(f"r{n}-{i}" for n in range(2) for i in range(30))  # each exactly once
