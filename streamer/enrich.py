"""Attribution of one spend-log row against the history, as of its transaction. Pure.

Precedence, and the ``attribution_source`` that says which one won:

1. ``spend_log``   the row's own non-empty ``team_id`` (what the proxy billed);
2. ``key_history`` the team of the row's key, as of the row's transaction;
3. ``metadata``    ``user_api_key_team_id`` the proxy wrote into the row;
4. ``unattributed`` with an ``unattributed_reason``.

Names (team, key, organization aliases) always come from the history as of
the transaction, and from the row's metadata only for entities the history
never saw.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from streamer.state.history import Entity, History, KeyVersion, OrganizationVersion, Position, TeamVersion

MASTER_KEY = "litellm_proxy_master_key"


class SpendRow(NamedTuple):
    """The columns of a ``LiteLLM_SpendLogs`` row that attribution reads (text as sent)."""

    request_id: str
    api_key: str
    spend: str | None
    model: str | None
    start_time: str | None
    team_id: str | None
    organization_id: str | None
    metadata: bytes | str | None  # the JSON text, still undecoded


SPEND_COLUMNS: dict[str, str] = {**{field: field for field in SpendRow._fields}, "start_time": "startTime"}
"""SpendRow field → LiteLLM column name."""


class AttributedRecord(NamedTuple):
    """One row of ``spend_attribution``; field order is the table's column order."""

    request_id: str
    api_key: str
    key_alias: str | None
    key_name: str | None
    team_id: str | None
    team_alias: str | None
    organization_id: str | None
    organization_alias: str | None
    user_id: str | None
    spend: str | None
    model: str | None
    start_time: str | None
    attribution_source: str
    unattributed_reason: str | None
    commit_lsn: str  # as pg_lsn prints it
    commit_time: str  # ISO 8601, UTC


class CommitInfo(NamedTuple):
    """What every record of one source transaction shares, formatted once."""

    commit_lsn: str
    commit_time: str


def attribute(row: SpendRow, history: History, position: Position, commit: CommitInfo) -> AttributedRecord:
    """The attributed record of ``row``, changed at ``position`` of the transaction ``commit``."""
    key: KeyVersion | None = history.as_of(Entity.KEY, row.api_key, position) if row.api_key else None  # type: ignore[assignment]
    metadata: dict[str, Any] | None = None if key else _metadata(row.metadata)

    team_id = row.team_id or None
    if team_id:
        source = "spend_log"
    elif key is not None and key.team_id:
        team_id, source = key.team_id, "key_history"
    else:
        metadata = metadata if metadata is not None else _metadata(row.metadata)
        team_id = _text(metadata.get("user_api_key_team_id"))
        source = "metadata" if team_id else "unattributed"

    team: TeamVersion | None = history.as_of(Entity.TEAM, team_id, position) if team_id else None  # type: ignore[assignment]
    if team is not None:
        team_alias = team.team_alias
    elif team_id:
        metadata = metadata if metadata is not None else _metadata(row.metadata)
        same_team = _text(metadata.get("user_api_key_team_id")) == team_id
        team_alias = _text(metadata.get("user_api_key_team_alias")) if same_team else None
    else:
        team_alias = None

    if key is not None:
        key_alias, key_name, user_id = key.key_alias, key.key_name, key.user_id
        key_org = key.organization_id
    else:
        assert metadata is not None
        key_alias = _text(metadata.get("user_api_key_alias"))
        key_name = None
        user_id = _text(metadata.get("user_api_key_user_id"))
        key_org = _text(metadata.get("user_api_key_org_id"))

    organization_id = row.organization_id or (team.organization_id if team else None) or key_org
    organization: OrganizationVersion | None = (
        history.as_of(Entity.ORGANIZATION, organization_id, position) if organization_id else None  # type: ignore[assignment]
    )
    return AttributedRecord(
        row.request_id,
        row.api_key,
        key_alias,
        key_name,
        team_id,
        team_alias,
        organization_id,
        organization.organization_alias if organization else None,
        user_id,
        row.spend,
        row.model,
        row.start_time,
        source,
        None if team_id else unattributed_reason(row.api_key, key),
        commit.commit_lsn,
        commit.commit_time,
    )


def unattributed_reason(api_key: str, key: KeyVersion | None) -> str:
    """Why a row has no team: what its ``api_key`` holds, or that its key has no team."""
    if not api_key:
        return "no_key"
    if api_key == MASTER_KEY:
        return "master_key"
    if api_key.startswith("hashed-jwt"):
        return "jwt"
    if api_key.startswith("cli-session"):
        return "cli_session"
    if key is None:
        return "unknown_key"
    return "key_without_team"


def _metadata(raw: bytes | str | None) -> dict[str, Any]:
    """The row's metadata JSON; anything unreadable counts as empty (the row is still attributed)."""
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
