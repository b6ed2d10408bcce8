"""The LiteLLM tables streamer watches, and what each one means to the history."""

from __future__ import annotations

from dataclasses import dataclass

from streamer.state.history import Entity


@dataclass(frozen=True)
class WatchedTable:
    name: str
    entity: Entity | None  # None: the spend logs, which are attributed, not versioned
    id_column: str
    archive: bool = False  # a Deleted* table: rows add history for entities never seen
    required: bool = True  # older LiteLLM versions have no Deleted* tables


KEYS = WatchedTable("LiteLLM_VerificationToken", Entity.KEY, "token")
TEAMS = WatchedTable("LiteLLM_TeamTable", Entity.TEAM, "team_id")
ORGANIZATIONS = WatchedTable("LiteLLM_OrganizationTable", Entity.ORGANIZATION, "organization_id")
DELETED_KEYS = WatchedTable("LiteLLM_DeletedVerificationToken", Entity.KEY, "token", archive=True, required=False)
DELETED_TEAMS = WatchedTable("LiteLLM_DeletedTeamTable", Entity.TEAM, "team_id", archive=True, required=False)
SPEND_LOGS = WatchedTable("LiteLLM_SpendLogs", None, "request_id")

WATCHED_TABLES: tuple[WatchedTable, ...] = (ORGANIZATIONS, TEAMS, KEYS, DELETED_TEAMS, DELETED_KEYS, SPEND_LOGS)
BY_NAME = {table.name: table for table in WATCHED_TABLES}

ARCHIVE_ORDER_COLUMN = "deleted_at"
"""Archive rows are loaded oldest first: a hash archived twice keeps its last archive."""
