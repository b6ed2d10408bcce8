"""A PostgreSQL restart mid-stream: streamer reconnects and goes on from its checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from streamer.devdb import EphemeralPostgres
from streamer.litellm import add_key, add_team, key_hash, spend_row, write_spend


def test_database_restart_mid_stream_is_survived() -> None:
    schema = (Path(__file__).parents[1] / "fixtures" / "litellm_schema.sql").read_text()
    with EphemeralPostgres(durable=False) as cluster:
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            conn.execute(schema)
            add_team(conn, "t", "Team")
            add_key(conn, key_hash("sk-r"), "r", "t")
        env = os.environ | {"STREAMER_SOURCE_DSN": cluster.dsn, "STREAMER_FLUSH_INTERVAL": "0.05"}
        process = subprocess.Popen([sys.executable, "-m", "streamer", "run"], env=env, stderr=subprocess.PIPE, text=True)
        try:
            with psycopg.connect(cluster.dsn, autocommit=True) as conn:
                while not conn.execute("SELECT 1 FROM pg_replication_slots WHERE active").fetchone():
                    assert process.poll() is None, process.stderr.read()  # type: ignore[union-attr]
                    time.sleep(0.05)
                write_spend(conn, [spend_row(f"before-{i}", key_hash("sk-r")) for i in range(50)])
            time.sleep(1)
            cluster.restart()  # every connection of the streamer drops
            with psycopg.connect(cluster.dsn, autocommit=True) as conn:
                write_spend(conn, [spend_row(f"after-{i}", key_hash("sk-r")) for i in range(50)])
                target = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]  # type: ignore[index]
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    assert process.poll() is None, process.stderr.read()  # type: ignore[union-attr]
                    row = conn.execute(
                        "SELECT confirmed_flush_lsn >= %s FROM pg_replication_slots WHERE slot_name = 'litellm_attribution'",
                        (target,),
                    ).fetchone()
                    if row and row[0]:
                        break
                    time.sleep(0.1)
                rows = conn.execute(
                    "SELECT count(*), count(*) FILTER (WHERE team_alias = 'Team') FROM litellm_attribution.spend_attribution"
                ).fetchone()
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
        assert rows == (100, 100), stderr
        assert process.returncode == 0, stderr
        assert "restarting from the checkpoint" in stderr
