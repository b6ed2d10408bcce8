"""``streamer demo``, the README's first command, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_shows_team_names_where_the_live_join_shows_blanks() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")} | {"COLUMNS": "120"}
    result = subprocess.run(
        [sys.executable, "-m", "streamer", "demo"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    story, tables = result.stdout.split("as a report joining the live tables sees it")
    live, attributed = tables.split("as streamer attributed it")
    assert "(blank)" in live and "Billing" not in live and "Search" not in live
    assert "(blank)" not in attributed
    for team in ("Billing", "Search (deleted)", "Applied Research"):
        assert team in attributed
    assert "Traceback" not in result.stderr


def test_demo_with_kafka_prints_consumed_records_with_team_names() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")} | {"COLUMNS": "160"}
    result = subprocess.run(
        [sys.executable, "-m", "streamer", "demo", "--kafka"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    _, consumed = result.stdout.split("records consumed from Kafka topic litellm.spend.attributed")
    assert "billing-bot" in consumed and "Billing" in consumed and "key_history" in consumed
