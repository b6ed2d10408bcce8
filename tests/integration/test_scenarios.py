"""Attribution scenarios against a real PostgreSQL, each asserting the exact attributed rows."""

from __future__ import annotations

import pytest

from streamer.litellm import (
    add_key,
    add_org,
    add_team,
    delete_key,
    delete_team,
    key_hash,
    move_key,
    rename_team,
    rotate_key,
    spend_row,
    write_spend,
)
from tests.conftest import WITHOUT_DELETED_TABLES, LiteLLMDatabase, RunningStreamer

COLUMNS = "api_key, key_alias, team_id, team_alias, attribution_source, unattributed_reason"

K1, K2, K3 = key_hash("sk-one"), key_hash("sk-two"), key_hash("sk-three")


def test_key_deleted_after_its_spend_keeps_team(litellm: LiteLLMDatabase, streamer: RunningStreamer) -> None:
    add_team(litellm.conn, "team-a", "Alpha")
    add_key(litellm.conn, K1, "alpha-key", "team-a")
    write_spend(litellm.conn, [spend_row("r1", K1), spend_row("r2", K1)])
    delete_key(litellm.conn, K1)
    streamer.catch_up()
    assert litellm.attribution(COLUMNS) == {
        "r1": (K1, "alpha-key", "team-a", "Alpha", "key_history", None),
        "r2": (K1, "alpha-key", "team-a", "Alpha", "key_history", None),
    }
    live_join = litellm.execute(
        'SELECT t.team_alias FROM "LiteLLM_SpendLogs" s LEFT JOIN "LiteLLM_VerificationToken" k ON k.token = s.api_key '
        'LEFT JOIN "LiteLLM_TeamTable" t ON t.team_id = k.team_id'
    )
    assert live_join == [(None,), (None,)]  # what the Usage view shows: blank team names


def test_spend_landing_after_key_delete(litellm: LiteLLMDatabase, streamer: RunningStreamer) -> None:
    add_team(litellm.conn, "team-a", "Alpha")
    add_key(litellm.conn, K1, "alpha-key", "team-a")
    delete_key(litellm.conn, K1)
    write_spend(litellm.conn, [spend_row("late", K1)])  # the proxy's delayed batch
    streamer.catch_up()
    assert litellm.attribution(COLUMNS) == {"late": (K1, "alpha-key", "team-a", "Alpha", "key_history", None)}
    versions = litellm.execute(
        "SELECT team_id, key_alias, deleted FROM litellm_attribution.key_versions WHERE token = %s "
        "ORDER BY valid_from, seq",
        (K1,),
    )
    assert versions == [("team-a", "alpha-key", False), ("team-a", "alpha-key", True)]


def test_rotation_keeps_old_hash_resolvable(litellm: LiteLLMDatabase, streamer: RunningStreamer) -> None:
    add_team(litellm.conn, "team-a", "Alpha")
    add_key(litellm.conn, K1, "alpha-key", "team-a")
    write_spend(litellm.conn, [spend_row("before", K1)])
    rotate_key(litellm.conn, K1, K2)
    write_spend(litellm.conn, [spend_row("late-old-hash", K1), spend_row("new-hash", K2)])
    streamer.catch_up()
    assert litellm.attribution(COLUMNS) == {
        "before": (K1, "alpha-key", "team-a", "Alpha", "key_history", None),
        "late-old-hash": (K1, "alpha-key", "team-a", "Alpha", "key_history", None),
        "new-hash": (K2, "alpha-key", "team-a", "Alpha", "key_history", None),
    }
    old = litellm.execute(
        "SELECT rotated_to, deleted FROM litellm_attribution.key_versions WHERE token = %s ORDER BY valid_from DESC, seq DESC LIMIT 1",
        (K1,),
    )
    assert old == [(K2, False)]


def test_team_renamed_after_spend(litellm: LiteLLMDatabase, streamer: RunningStreamer) -> None:
    add_team(litellm.conn, "team-a", "Alpha")
    add_key(litellm.conn, K1, "alpha-key", "team-a")
    write_spend(litellm.conn, [spend_row("r1", K1)])
    rename_team(litellm.conn, "team-a", "Alpha Prime")
    write_spend(litellm.conn, [spend_row("r2", K1)])
    streamer.catch_up()
    assert litellm.attribution("team_alias") == {"r1": ("Alpha",), "r2": ("Alpha Prime",)}
    view = litellm.execute(
        "SELECT request_id, team_alias, team_alias_at_request FROM litellm_attribution.spend_logs_attributed "
        "ORDER BY request_id"
    )
    assert view == [("r1", "Alpha Prime", "Alpha"), ("r2", "Alpha Prime", "Alpha Prime")]


def test_team_deleted(litellm: LiteLLMDatabase, streamer: RunningStreamer) -> None:
    add_org(litellm.conn, "org-1", "Org One")
    add_team(litellm.conn, "team-a", "Alpha", "org-1")
    add_key(litellm.conn, K1, "alpha-key", "team-a")
    write_spend(litellm.conn, [spend_row("r1", K1)])
    delete_team(litellm.conn, "team-a")
    write_spend(litellm.conn, [spend_row("r2", K1), spend_row("r3", "", team_id="team-a")])
    streamer.catch_up()
    assert litellm.attribution(COLUMNS + ", organization_id, organization_alias") == {
        "r1": (K1, "alpha-key", "team-a", "Alpha", "key_history", None, "org-1", "Org One"),
        "r2": (K1, "alpha-key", "team-a", "Alpha", "key_history", None, "org-1", "Org One"),
        "r3": ("", None, "team-a", "Alpha", "spend_log", None, "org-1", "Org One"),
    }
    assert litellm.execute("SELECT team_id, team_alias, deleted FROM litellm_attribution.team_names") == [
        ("team-a", "Alpha", True)
    ]


def test_key_moved_between_batches(litellm: LiteLLMDatabase, streamer: RunningStreamer) -> None:
    add_team(litellm.conn, "team-a", "Alpha")
    add_team(litellm.conn, "team-b", "Beta")
    add_key(litellm.conn, K1, "mover", "team-a")
    write_spend(litellm.conn, [spend_row("r1", K1)])
    move_key(litellm.conn, K1, "team-b")
    write_spend(litellm.conn, [spend_row("r2", K1)])
    streamer.catch_up()
    assert litellm.attribution("team_id, team_alias") == {"r1": ("team-a", "Alpha"), "r2": ("team-b", "Beta")}


def test_row_team_id_wins_over_key(litellm: LiteLLMDatabase, streamer: RunningStreamer) -> None:
    add_team(litellm.conn, "team-a", "Alpha")
    add_team(litellm.conn, "team-b", "Beta")
    add_key(litellm.conn, K1, "k", "team-a")
    write_spend(litellm.conn, [spend_row("r1", K1, team_id="team-b")])
    streamer.catch_up()
    assert litellm.attribution(COLUMNS) == {"r1": (K1, "k", "team-b", "Beta", "spend_log", None)}


@pytest.mark.parametrize(
    ("api_key", "reason"),
    [
        ("", "no_key"),
        ("litellm_proxy_master_key", "master_key"),
        ("hashed-jwt-3f2a9c", "jwt"),
        ("cli-session-42", "cli_session"),
        (key_hash("sk-never-seen"), "unknown_key"),
    ],
)
def test_non_key_api_keys_are_unattributed_with_reason(
    litellm: LiteLLMDatabase, streamer: RunningStreamer, api_key: str, reason: str
) -> None:
    write_spend(litellm.conn, [spend_row("r1", api_key)])
    streamer.catch_up()
    assert litellm.attribution(COLUMNS) == {"r1": (api_key, None, None, None, "unattributed", reason)}


def test_metadata_fallback(litellm: LiteLLMDatabase, streamer: RunningStreamer) -> None:
    metadata = {
        "user_api_key_alias": "meta-key",
        "user_api_key_team_id": "team-m",
        "user_api_key_team_alias": "Meta Team",
        "user_api_key_user_id": "u1",
    }
    write_spend(litellm.conn, [spend_row("r1", key_hash("sk-unknown"), metadata=metadata)])
    streamer.catch_up()
    assert litellm.attribution(COLUMNS + ", user_id") == {
        "r1": (key_hash("sk-unknown"), "meta-key", "team-m", "Meta Team", "metadata", None, "u1")
    }


def test_key_without_team(litellm: LiteLLMDatabase, streamer: RunningStreamer) -> None:
    add_key(litellm.conn, K1, "personal", None, user_id="u1")
    write_spend(litellm.conn, [spend_row("r1", K1)])
    streamer.catch_up()
    assert litellm.attribution(COLUMNS + ", user_id") == {
        "r1": (K1, "personal", None, None, "unattributed", "key_without_team", "u1")
    }


@pytest.mark.parametrize("deleted_tables", [True, False], ids=["with-deleted-tables", "without-deleted-tables"])
def test_entities_from_before_setup_deleted_afterwards(litellm: LiteLLMDatabase, deleted_tables: bool) -> None:
    if not deleted_tables:
        litellm.execute(WITHOUT_DELETED_TABLES)
    add_team(litellm.conn, "team-a", "Alpha")
    add_key(litellm.conn, K1, "old-key", "team-a")
    add_key(litellm.conn, K3, "archived-before-setup", "team-a")
    delete_key(litellm.conn, K3, archive=deleted_tables)  # gone before streamer existed
    running = RunningStreamer(litellm, litellm.settings())
    try:
        delete_team(litellm.conn, "team-a", archive=deleted_tables)
        write_spend(litellm.conn, [spend_row("r1", K1), spend_row("r2", K3)])
        running.catch_up()
    finally:
        running.stop()
    expected_k3 = (
        (K3, "archived-before-setup", "team-a", "Alpha", "key_history", None)
        if deleted_tables
        else (K3, None, None, None, "unattributed", "unknown_key")
    )
    assert litellm.attribution(COLUMNS) == {
        "r1": (K1, "old-key", "team-a", "Alpha", "key_history", None),
        "r2": expected_k3,
    }


def test_archive_row_adds_history_for_unseen_key(litellm: LiteLLMDatabase, streamer: RunningStreamer) -> None:
    add_team(litellm.conn, "team-a", "Alpha")
    litellm.execute(
        'INSERT INTO "LiteLLM_DeletedVerificationToken" (id, token, key_alias, team_id) VALUES (%s, %s, %s, %s)',
        ("arch-1", K2, "restored-alias", "team-a"),
    )
    write_spend(litellm.conn, [spend_row("r1", K2)])
    streamer.catch_up()
    assert litellm.attribution(COLUMNS) == {"r1": (K2, "restored-alias", "team-a", "Alpha", "key_history", None)}


def test_unchanged_toast_update_keeps_alias(litellm: LiteLLMDatabase, streamer: RunningStreamer) -> None:
    add_team(litellm.conn, "team-a", "Alpha")
    big_alias = "".join(f"{i:08x}" for i in range(5000))  # 40 kB, incompressible enough to be TOASTed
    litellm.execute("ALTER TABLE \"LiteLLM_VerificationToken\" ALTER COLUMN key_alias SET STORAGE EXTERNAL")
    add_key(litellm.conn, K1, big_alias, "team-a")
    litellm.execute('UPDATE "LiteLLM_VerificationToken" SET spend = spend + 1 WHERE token = %s', (K1,))
    write_spend(litellm.conn, [spend_row("r1", K1)])
    streamer.catch_up()
    assert litellm.attribution("key_alias, team_id") == {"r1": (big_alias, "team-a")}


@pytest.mark.parametrize("identity", ["DEFAULT", "FULL"])
def test_replica_identity_both_ways(litellm: LiteLLMDatabase, identity: str) -> None:
    for table in ("LiteLLM_VerificationToken", "LiteLLM_TeamTable", "LiteLLM_SpendLogs"):
        litellm.execute(f'ALTER TABLE "{table}" REPLICA IDENTITY {identity}')
    running = RunningStreamer(litellm, litellm.settings())
    try:
        add_team(litellm.conn, "team-a", "Alpha")
        add_key(litellm.conn, K1, "k1", "team-a")
        add_key(litellm.conn, K2, "k2", "team-a")
        rotate_key(litellm.conn, K2, K3)
        delete_key(litellm.conn, K1)
        delete_team(litellm.conn, "team-a")
        write_spend(litellm.conn, [spend_row("r1", K1), spend_row("r2", K2), spend_row("r3", K3)])
        running.catch_up()
    finally:
        running.stop()
    assert litellm.attribution(COLUMNS) == {
        "r1": (K1, "k1", "team-a", "Alpha", "key_history", None),
        "r2": (K2, "k2", "team-a", "Alpha", "key_history", None),
        "r3": (K3, "k2", "team-a", "Alpha", "key_history", None),
    }


def test_alter_table_add_column_mid_stream(litellm: LiteLLMDatabase, streamer: RunningStreamer) -> None:
    add_team(litellm.conn, "team-a", "Alpha")
    add_key(litellm.conn, K1, "k", "team-a")
    write_spend(litellm.conn, [spend_row("r1", K1)])
    litellm.execute('ALTER TABLE "LiteLLM_SpendLogs" ADD COLUMN "mcp_namespaced_tool_name" TEXT')
    litellm.execute('ALTER TABLE "LiteLLM_SpendLogs" DROP COLUMN "cache_key"')
    write_spend(litellm.conn, [spend_row("r2", K1)])
    streamer.catch_up()
    assert litellm.attribution("team_alias, spend") == {"r1": ("Alpha", 0.01), "r2": ("Alpha", 0.01)}


def test_truncate_spend_logs_keeps_attribution(litellm: LiteLLMDatabase, streamer: RunningStreamer) -> None:
    add_team(litellm.conn, "team-a", "Alpha")
    add_key(litellm.conn, K1, "k", "team-a")
    write_spend(litellm.conn, [spend_row("r1", K1)])
    litellm.execute('TRUNCATE "LiteLLM_SpendLogs"')
    write_spend(litellm.conn, [spend_row("r2", K1)])
    streamer.catch_up()
    assert litellm.attribution("team_alias") == {"r1": ("Alpha",), "r2": ("Alpha",)}
    assert litellm.execute("SELECT request_id FROM litellm_attribution.spend_logs_attributed") == [("r2",)]


def test_spend_update_reattributes_once(litellm: LiteLLMDatabase, streamer: RunningStreamer) -> None:
    add_team(litellm.conn, "team-a", "Alpha")
    add_key(litellm.conn, K1, "k", "team-a")
    write_spend(litellm.conn, [spend_row("r1", K1, spend=1.0)])
    litellm.execute("""UPDATE "LiteLLM_SpendLogs" SET spend = 2.5 WHERE request_id = 'r1'""")
    streamer.catch_up()
    assert litellm.attribution("spend, team_id") == {"r1": (2.5, "team-a")}


def test_restart_loads_state_not_a_new_snapshot(litellm: LiteLLMDatabase) -> None:
    add_team(litellm.conn, "team-a", "Alpha")
    add_key(litellm.conn, K1, "k", "team-a")
    first = RunningStreamer(litellm, litellm.settings())
    write_spend(litellm.conn, [spend_row("r1", K1)])
    first.catch_up()
    first.stop()
    delete_key(litellm.conn, K1)  # while the streamer is down
    delete_team(litellm.conn, "team-a")
    second = RunningStreamer(litellm, litellm.settings())
    try:
        write_spend(litellm.conn, [spend_row("r2", K1)])
        second.catch_up()
    finally:
        second.stop()
    assert litellm.attribution(COLUMNS) == {
        "r1": (K1, "k", "team-a", "Alpha", "key_history", None),
        "r2": (K1, "k", "team-a", "Alpha", "key_history", None),
    }
    snapshots = litellm.execute("SELECT count(*) FROM litellm_attribution.checkpoint")
    assert snapshots == [(1,)]
