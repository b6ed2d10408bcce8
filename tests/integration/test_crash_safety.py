"""kill -9 at random points while spend is written: no row lost, none doubled,
and the result identical to an uninterrupted run of the same story."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import psycopg

from streamer.litellm import RandomWorkload
from tests.conftest import LiteLLMDatabase, RunningStreamer

SEED = 20261204
BATCHES = 120
KILLS = 6
COMPARED = "api_key, key_alias, key_name, team_id, team_alias, organization_id, user_id, spend, model, attribution_source, unattributed_reason"


def play(dsn: str, pause: float) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for operation in RandomWorkload(SEED, BATCHES).operations():
            operation(conn)
            time.sleep(pause)


def streamer_env(db: LiteLLMDatabase) -> dict[str, str]:
    return os.environ | {
        "STREAMER_SOURCE_DSN": db.dsn,
        "STREAMER_SLOT": db.slot,
        "STREAMER_BATCH_SIZE": "250",
        "STREAMER_FLUSH_INTERVAL": "0.05",
        "STREAMER_STATUS_INTERVAL": "0.5",
    }


def start_streamer(db: LiteLLMDatabase) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "streamer", "run"], env=streamer_env(db), stderr=subprocess.PIPE)


def history_of(db: LiteLLMDatabase) -> list[tuple]:
    return db.execute(
        "SELECT token, key_alias, team_id, deleted, rotated_to FROM litellm_attribution.key_versions "
        "ORDER BY token, valid_from, seq"
    ) + db.execute(
        "SELECT team_id, team_alias, organization_id, deleted, NULL FROM litellm_attribution.team_versions "
        "ORDER BY team_id, valid_from, seq"
    )


def test_kill_9_at_random_points_loses_and_doubles_nothing(postgres, litellm: LiteLLMDatabase) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import _new_database

    # the uninterrupted run of the same story, in a database of its own
    with _new_database(postgres) as reference:
        running = RunningStreamer(reference, reference.settings(batch_size=250))
        play(reference.dsn, 0)
        running.catch_up()
        running.stop()
        expected = reference.attribution(COMPARED)
        expected_history = history_of(reference)

    rnd = random.Random(SEED)
    setup = subprocess.run([sys.executable, "-m", "streamer", "setup"], env=streamer_env(litellm), capture_output=True)
    assert setup.returncode == 0, setup.stderr.decode()  # spend written before setup is not streamed
    writer = threading.Thread(target=play, args=(litellm.dsn, 0.03))
    process = start_streamer(litellm)
    writer.start()
    kills = 0
    while kills < KILLS or writer.is_alive():
        time.sleep(rnd.uniform(0.5, 1.5))
        assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        process = start_streamer(litellm)
    writer.join()
    try:
        litellm.wait_confirmed(litellm.current_lsn(), timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert kills >= KILLS

    spend_ids = {row[0] for row in litellm.execute('SELECT request_id FROM "LiteLLM_SpendLogs"')}
    actual = litellm.attribution(COMPARED)
    assert len(spend_ids) == BATCHES * 100
    assert set(actual) == spend_ids  # zero missing (and the primary key allows no duplicates)
    assert actual == expected  # identical to the uninterrupted run
    assert history_of(litellm) == expected_history  # no version applied twice or lost
