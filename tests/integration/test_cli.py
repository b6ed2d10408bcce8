"""The ``streamer`` command as users run it: exit codes, one-line errors, settings layers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from streamer.devdb import EphemeralPostgres
from streamer.litellm import add_key, add_team, key_hash, spend_row, write_spend
from tests.conftest import LiteLLMDatabase


def streamer(*args: str, env: dict[str, str] | None = None, **kwargs: object) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    return subprocess.run(
        [sys.executable, "-m", "streamer", *args],
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        **kwargs,  # type: ignore[arg-type]
    )


def db_env(db: LiteLLMDatabase) -> dict[str, str]:
    return {"STREAMER_SOURCE_DSN": db.dsn, "STREAMER_SLOT": db.slot}


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamer: error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_source_dsn_is_a_config_error() -> None:
    assert_one_line_error(streamer("run"), 2, "STREAMER_SOURCE_DSN")


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"STREAMER_BATCH_SIZE": "many"}, "batch_size"),
        ({"STREAMER_FLUSH_INTERVAL": "-1"}, "flush_interval"),
        ({"STREAMER_SLOT": "Bad-Name"}, "slot"),
        ({"STREAMER_LOG_LEVEL": "loud"}, "log_level"),
    ],
)
def test_invalid_setting_names_the_setting(env: dict[str, str], fragment: str) -> None:
    assert_one_line_error(streamer("status", env=env | {"STREAMER_SOURCE_DSN": "host=x"}), 2, fragment)


def test_unknown_key_in_config_file(tmp_path: Path) -> None:
    config = tmp_path / "streamer.yaml"
    config.write_text("source_dsn: host=x\nbatchsize: 10\n")
    assert_one_line_error(streamer("status", "--config", str(config)), 2, "batchsize")


def test_settings_layers_flags_over_env_over_file(litellm: LiteLLMDatabase, tmp_path: Path) -> None:
    config = tmp_path / "streamer.yaml"
    config.write_text(f"source_dsn: '{litellm.dsn}'\nslot: from_file\npublication: from_file\n")
    result = streamer("status", "--json", "--config", str(config), "--slot", "from_flag", env={"STREAMER_SLOT": "from_env", "STREAMER_PUBLICATION": "from_env"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["slot"], report["publication"]) == ("from_flag", "from_env")


def test_unreachable_database_is_a_runtime_error_and_debug_shows_traceback() -> None:
    env = {"STREAMER_SOURCE_DSN": "host=127.0.0.1 port=1 connect_timeout=2"}
    assert_one_line_error(streamer("setup", env=env), 1, "cannot connect to the source database")
    debug = streamer("setup", "--debug", env=env)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_setup_run_status_teardown(litellm: LiteLLMDatabase) -> None:
    env = db_env(litellm)
    add_team(litellm.conn, "t", "Team")
    add_key(litellm.conn, key_hash("sk-1"), "one", "t")
    setup = streamer("setup", env=env)
    assert setup.returncode == 0 and "created" in setup.stdout, setup.stderr
    assert streamer("setup", env=env).stdout.startswith("already set up")

    run = subprocess.Popen(
        [sys.executable, "-m", "streamer", "run"], env=os.environ | env, stderr=subprocess.PIPE, text=True
    )
    write_spend(litellm.conn, [spend_row("r1", key_hash("sk-1")), spend_row("r2", "")])
    litellm.wait_confirmed(litellm.current_lsn())
    status = json.loads(streamer("status", "--json", env=env).stdout)
    assert status["slot_active"] is True
    run.send_signal(signal.SIGTERM)
    assert run.wait(30) == 0, run.stderr.read()  # type: ignore[union-attr]

    status = json.loads(streamer("status", "--json", env=env).stdout)
    assert status["slot_active"] is False
    assert (status["keys"], status["teams"], status["attributed_rows"]) == (1, 1, 2)
    assert status["checkpoint_lsn"] is not None and status["confirmed_flush_lsn"] is not None
    assert isinstance(status["lag_bytes"], int)
    human = streamer("status", env=env)
    assert "attributed_rows" in human.stdout and human.returncode == 0

    refused = streamer("teardown", env=env)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert streamer("teardown", "--yes", env=env).returncode == 0
    assert litellm.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (litellm.slot,)) == [(0,)]
    assert litellm.execute("SELECT count(*) FROM pg_publication") == [(0,)]
    assert litellm.execute("SELECT count(*) FROM litellm_attribution.spend_attribution") == [(2,)]  # kept
    assert streamer("teardown", "--yes", "--drop-state", env=env).returncode == 0
    assert litellm.execute("SELECT to_regnamespace('litellm_attribution')") == [(None,)]


def test_sigterm_mid_stream_commits_what_was_handled(litellm: LiteLLMDatabase) -> None:
    env = db_env(litellm)
    assert streamer("setup", env=env).returncode == 0
    run = subprocess.Popen([sys.executable, "-m", "streamer", "run"], env=os.environ | env, stderr=subprocess.PIPE)
    for batch in range(20):
        write_spend(litellm.conn, [spend_row(f"r{batch}-{i}", "") for i in range(100)])
    time.sleep(0.3)
    run.send_signal(signal.SIGTERM)
    assert run.wait(30) == 0
    confirmed = litellm.execute(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (litellm.slot,)
    )[0][0]
    checkpoint = litellm.execute("SELECT lsn::text FROM litellm_attribution.checkpoint")[0][0]
    committed = litellm.execute(
        "SELECT count(*) FROM litellm_attribution.spend_attribution WHERE commit_lsn < %s::pg_lsn", (confirmed,)
    )[0][0]
    total = litellm.execute("SELECT count(*) FROM litellm_attribution.spend_attribution")[0][0]
    assert committed == total  # nothing acknowledged that is not attributed
    assert litellm.execute("SELECT %s::pg_lsn <= %s::pg_lsn", (checkpoint, confirmed)) == [(True,)]


@pytest.fixture(scope="module")
def replica_cluster() -> EphemeralPostgres:
    cluster = EphemeralPostgres(durable=False, settings={"wal_level": "replica"}).start()
    yield cluster  # type: ignore[misc]
    cluster.stop()


def test_preflight_wal_level(replica_cluster: EphemeralPostgres) -> None:
    result = streamer("setup", env={"STREAMER_SOURCE_DSN": replica_cluster.dsn})
    assert_one_line_error(result, 1, "wal_level is 'replica'", "ALTER SYSTEM SET wal_level = logical", "restart")


def test_preflight_role_without_replication(litellm: LiteLLMDatabase) -> None:
    litellm.execute("DO $$ BEGIN CREATE ROLE plain LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    result = streamer("setup", env={"STREAMER_SOURCE_DSN": litellm.dsn.replace("user=postgres", "user=plain")})
    assert_one_line_error(result, 1, 'role "plain" lacks the REPLICATION attribute', "ALTER ROLE")


def test_preflight_missing_tables(litellm: LiteLLMDatabase) -> None:
    litellm.execute('DROP TABLE "LiteLLM_SpendLogs"')
    assert_one_line_error(streamer("setup", env=db_env(litellm)), 1, "LiteLLM_SpendLogs")


def test_preflight_no_free_slot() -> None:
    with EphemeralPostgres(durable=False, settings={"max_replication_slots": "1"}) as cluster:
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            conn.execute((Path(__file__).parents[1] / "fixtures" / "litellm_schema.sql").read_text())
            conn.execute("SELECT pg_create_logical_replication_slot('someone_else', 'pgoutput')")
        result = streamer("setup", env={"STREAMER_SOURCE_DSN": cluster.dsn})
    assert_one_line_error(result, 1, "no free replication slot", "max_replication_slots")
