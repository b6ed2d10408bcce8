"""Attribution precedence and reasons, on the pure enricher."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from streamer.enrich import CommitInfo, SpendRow, attribute
from streamer.state.history import Entity, History

NOW = CommitInfo("0/14", datetime(2026, 1, 1, tzinfo=timezone.utc).isoformat())


def history() -> History:
    h = History()
    h.upsert(Entity.ORGANIZATION, "o1", {"organization_alias": "Org"}, (10, 1))
    h.upsert(Entity.TEAM, "t1", {"team_alias": "Alpha", "organization_id": "o1"}, (10, 2))
    h.upsert(Entity.TEAM, "t2", {"team_alias": "Beta"}, (10, 3))
    h.upsert(Entity.KEY, "k1", {"key_alias": "ka", "key_name": "sk-...1", "team_id": "t1", "user_id": "u1"}, (10, 4))
    h.upsert(Entity.KEY, "solo", {"key_alias": "mine", "team_id": None, "user_id": "u2"}, (10, 5))
    return h


def row(api_key: str = "k1", team_id: str | None = "", metadata: object = None) -> SpendRow:
    raw = metadata if isinstance(metadata, str) or metadata is None else json.dumps(metadata)
    return SpendRow("r", api_key, "0.5", "gpt", "2026-01-01 00:00:00", team_id, None, raw)


def test_key_history_as_of_the_transaction() -> None:
    h = history()
    h.upsert(Entity.TEAM, "t1", {"team_alias": "Alpha 2"}, (50, 1))
    early = attribute(row(), h, (20, 1), NOW)
    late = attribute(row(), h, (60, 1), NOW)
    assert (early.team_id, early.team_alias, early.attribution_source) == ("t1", "Alpha", "key_history")
    assert late.team_alias == "Alpha 2"
    assert (early.key_alias, early.key_name, early.user_id) == ("ka", "sk-...1", "u1")
    assert (early.organization_id, early.organization_alias) == ("o1", "Org")
    assert early.commit_lsn == "0/14"


def test_row_team_wins() -> None:
    record = attribute(row(team_id="t2"), history(), (20, 1), NOW)
    assert (record.team_id, record.team_alias, record.attribution_source) == ("t2", "Beta", "spend_log")


def test_metadata_for_unknown_key_and_unknown_team() -> None:
    meta = {"user_api_key_team_id": "t9", "user_api_key_team_alias": "Nine", "user_api_key_alias": "mk"}
    record = attribute(row("k-unknown", metadata=meta), history(), (20, 1), NOW)
    assert (record.team_id, record.team_alias, record.key_alias, record.attribution_source) == (
        "t9", "Nine", "mk", "metadata"
    )


def test_known_team_alias_beats_metadata_alias() -> None:
    meta = {"user_api_key_team_id": "t1", "user_api_key_team_alias": "stale"}
    assert attribute(row("k-unknown", metadata=meta), history(), (20, 1), NOW).team_alias == "Alpha"


@pytest.mark.parametrize(
    ("api_key", "reason"),
    [("", "no_key"), ("litellm_proxy_master_key", "master_key"), ("hashed-jwt-x", "jwt"),
     ("cli-session-1", "cli_session"), ("nope", "unknown_key"), ("solo", "key_without_team")],
)
def test_unattributed_reasons(api_key: str, reason: str) -> None:
    record = attribute(row(api_key), history(), (20, 1), NOW)
    assert (record.team_id, record.attribution_source, record.unattributed_reason) == (None, "unattributed", reason)


@pytest.mark.parametrize("metadata", ["not json", "[1, 2]", "null", '{"user_api_key_team_id": 5}'])
def test_unreadable_metadata_is_no_metadata(metadata: str) -> None:
    record = attribute(row("nope", metadata=metadata), history(), (20, 1), NOW)
    assert (record.attribution_source, record.unattributed_reason) == ("unattributed", "unknown_key")
