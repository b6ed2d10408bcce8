"""Operating streamer: idle slots advance, huge transactions stay bounded, setup is repeatable."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import psutil
import psycopg

from streamer.litellm import add_key, add_team, key_hash, spend_row, write_spend
from streamer.setup import setup
from tests.conftest import LiteLLMDatabase, RunningStreamer


def confirmed_flush(db: LiteLLMDatabase) -> str:
    return db.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (db.slot,))[0][0]


def test_writes_outside_the_publication_advance_the_slot(litellm: LiteLLMDatabase, streamer: RunningStreamer) -> None:
    streamer.catch_up()
    before = confirmed_flush(litellm)
    litellm.execute("CREATE TABLE unrelated (x int)")
    for _ in range(20):
        litellm.execute("INSERT INTO unrelated SELECT generate_series(1, 100)")
    target = litellm.current_lsn()
    litellm.wait_confirmed(target, timeout=20)
    assert confirmed_flush(litellm) != before
    assert litellm.attribution() == {}


def test_setup_twice_is_safe_and_keeps_the_slot(litellm: LiteLLMDatabase) -> None:
    add_team(litellm.conn, "t", "T")
    first = setup(litellm.settings())
    slot_before = litellm.execute("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %s", (litellm.slot,))
    second = setup(litellm.settings())
    assert first.slot_created and first.publication_created and first.snapshot_rows["LiteLLM_TeamTable"] == 1
    assert not second.slot_created and not second.publication_created and second.migrations_applied == 0
    assert litellm.execute(
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %s", (litellm.slot,)
    ) == slot_before
    assert litellm.execute("SELECT count(*) FROM litellm_attribution.team_versions") == [(1,)]
    published = litellm.execute("SELECT tablename FROM pg_publication_tables WHERE pubname = 'litellm_attribution'")
    assert sorted(t for (t,) in published) == sorted(
        [
            "LiteLLM_VerificationToken",
            "LiteLLM_TeamTable",
            "LiteLLM_OrganizationTable",
            "LiteLLM_SpendLogs",
            "LiteLLM_DeletedVerificationToken",
            "LiteLLM_DeletedTeamTable",
        ]
    )


def test_snapshot_and_stream_meet_without_gap_or_overlap(litellm: LiteLLMDatabase) -> None:
    """Keys written while setup runs are either in the snapshot or in the stream, once."""
    add_team(litellm.conn, "t", "Team")
    stop = threading.Event()
    written: list[str] = []

    def keep_adding() -> None:
        with psycopg.connect(litellm.dsn, autocommit=True) as conn:
            while not stop.is_set():
                token = key_hash(f"sk-concurrent-{len(written)}")
                add_key(conn, token, f"alias-{len(written)}", "t")
                written.append(token)

    writer = threading.Thread(target=keep_adding)
    writer.start()
    time.sleep(0.2)
    running = RunningStreamer(litellm, litellm.settings())
    time.sleep(0.3)
    stop.set()
    writer.join()
    try:
        rows = [spend_row(f"r{i}", token) for i, token in enumerate(written)]
        for start in range(0, len(rows), 500):
            write_spend(litellm.conn, rows[start : start + 500])
        running.catch_up()
    finally:
        running.stop()
    attributed = litellm.attribution("key_alias, team_alias")
    assert attributed == {f"r{i}": (f"alias-{i}", "Team") for i in range(len(written))}
    versions = litellm.execute("SELECT token, count(*) FROM litellm_attribution.key_versions GROUP BY token")
    assert {count for _, count in versions} == {1} and len(versions) == len(written)


def test_one_million_row_transaction_keeps_memory_bounded(litellm: LiteLLMDatabase) -> None:
    env = os.environ | {"STREAMER_SOURCE_DSN": litellm.dsn, "STREAMER_SLOT": litellm.slot}
    assert subprocess.run([sys.executable, "-m", "streamer", "setup"], env=env, capture_output=True).returncode == 0
    add_team(litellm.conn, "t", "Team")
    add_key(litellm.conn, key_hash("sk-big"), "big", "t")
    litellm.execute(
        'INSERT INTO "LiteLLM_SpendLogs" (request_id, call_type, api_key, spend, "startTime", "endTime", metadata) '
        "SELECT 'big-' || i, 'acompletion', %s, 0.001, now(), now(), "
        """('{"user_api_key_alias": "big", "padding": "' || repeat('x', 300) || '"}')::jsonb """
        "FROM generate_series(1, 1000000) i",
        (key_hash("sk-big"),),
    )
    process = subprocess.Popen([sys.executable, "-m", "streamer", "run"], env=env, stderr=subprocess.PIPE)
    peak = 0
    try:
        target = litellm.current_lsn()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            peak = max(peak, psutil.Process(process.pid).memory_info().rss)
            if litellm.execute(
                "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                (target, litellm.slot),
            )[0][0]:
                break
            assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
            time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(60)
    assert litellm.execute(
        "SELECT count(*), count(*) FILTER (WHERE team_alias = 'Team') FROM litellm_attribution.spend_attribution"
    ) == [(1_000_000, 1_000_000)]
    print(f"peak RSS {peak / 2**20:.0f} MiB")
    assert peak < 200 * 1024 * 1024, f"peak RSS {peak / 2**20:.0f} MiB while streaming one 1,000,000-row transaction"


def test_state_in_another_database(litellm: LiteLLMDatabase) -> None:
    state_db = f"{litellm.name}_state"
    litellm.execute(f"CREATE DATABASE {state_db}")
    state_dsn = litellm.cluster.dsn_for(state_db)
    add_team(litellm.conn, "t", "Team")
    add_key(litellm.conn, key_hash("sk-s"), "s", "t")
    running = RunningStreamer(litellm, litellm.settings(state_dsn=state_dsn))
    try:
        write_spend(litellm.conn, [spend_row("r1", key_hash("sk-s"))])
        running.catch_up()
    finally:
        running.stop()
    with psycopg.connect(state_dsn) as state:
        rows = state.execute("SELECT request_id, team_alias FROM litellm_attribution.spend_attribution").fetchall()
        has_view = state.execute("SELECT to_regclass('litellm_attribution.spend_logs_attributed')").fetchone()
    assert rows == [("r1", "Team")]
    assert has_view == (None,)  # the join view needs the spend logs in the same database
    assert litellm.execute("SELECT to_regnamespace('litellm_attribution')") == [(None,)]
    litellm.execute(f"DROP DATABASE {state_db} WITH (FORCE)")
