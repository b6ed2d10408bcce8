"""Writes rows the way the LiteLLM proxy does (quoted Prisma identifiers, '' for no team)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import psycopg


def key_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def add_org(conn: psycopg.Connection, org_id: str, alias: str) -> None:
    conn.execute(
        'INSERT INTO "LiteLLM_OrganizationTable" (organization_id, organization_alias, budget_id, created_by, updated_by) '
        "VALUES (%s, %s, 'budget', 'admin', 'admin')",
        (org_id, alias),
    )


def add_team(conn: psycopg.Connection, team_id: str, alias: str | None, org_id: str | None = None) -> None:
    conn.execute(
        'INSERT INTO "LiteLLM_TeamTable" (team_id, team_alias, organization_id) VALUES (%s, %s, %s)',
        (team_id, alias, org_id),
    )


def add_key(
    conn: psycopg.Connection,
    token: str,
    alias: str | None,
    team_id: str | None,
    user_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        'INSERT INTO "LiteLLM_VerificationToken" (token, key_name, key_alias, team_id, user_id, metadata) '
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (token, f"sk-...{token[-4:]}", alias, team_id, user_id, json.dumps(metadata or {})),
    )


def delete_key(conn: psycopg.Connection, token: str, archive: bool = True) -> None:
    """/key/delete: archive (newer versions) then DELETE, without a surrounding transaction."""
    if archive:
        conn.execute(
            'INSERT INTO "LiteLLM_DeletedVerificationToken" (id, token, key_name, key_alias, team_id, user_id, '
            "organization_id, metadata) SELECT gen_random_uuid()::text, token, key_name, key_alias, team_id, "
            'user_id, organization_id, metadata FROM "LiteLLM_VerificationToken" WHERE token = %s',
            (token,),
        )
    conn.execute('DELETE FROM "LiteLLM_VerificationToken" WHERE token = %s', (token,))


def delete_team(conn: psycopg.Connection, team_id: str, archive: bool = True) -> None:
    """/team/delete: the team's keys, then the team row (archived first in newer versions)."""
    for (token,) in conn.execute('SELECT token FROM "LiteLLM_VerificationToken" WHERE team_id = %s', (team_id,)).fetchall():
        delete_key(conn, token, archive)
    if archive:
        conn.execute(
            'INSERT INTO "LiteLLM_DeletedTeamTable" (id, team_id, team_alias, organization_id) '
            'SELECT gen_random_uuid()::text, team_id, team_alias, organization_id FROM "LiteLLM_TeamTable" '
            "WHERE team_id = %s",
            (team_id,),
        )
    conn.execute('DELETE FROM "LiteLLM_TeamTable" WHERE team_id = %s', (team_id,))


def rotate_key(conn: psycopg.Connection, old: str, new: str) -> None:
    """/key/regenerate: an UPDATE of the primary key."""
    conn.execute(
        'UPDATE "LiteLLM_VerificationToken" SET token = %s, key_name = %s, rotation_count = rotation_count + 1 '
        "WHERE token = %s",
        (new, f"sk-...{new[-4:]}", old),
    )


def spend_row(
    request_id: str,
    api_key: str,
    team_id: str = "",
    spend: float = 0.01,
    metadata: dict[str, Any] | None = None,
    model: str = "gpt-4o-mini",
) -> tuple:
    return (request_id, api_key, spend, model, team_id, json.dumps(metadata or {}))


def write_spend(conn: psycopg.Connection, rows: Iterable[tuple]) -> None:
    """One batch of the proxy's spend writer: one multi-row INSERT in one transaction."""
    rows = list(rows)
    if not rows:
        return
    values = ", ".join(["(%s, 'acompletion', %s, %s, 10, 5, 5, now(), now(), %s, %s, %s)"] * len(rows))
    params = [value for row in rows for value in row]
    conn.execute(
        'INSERT INTO "LiteLLM_SpendLogs" (request_id, call_type, api_key, spend, total_tokens, prompt_tokens, '
        f'completion_tokens, "startTime", "endTime", model, team_id, metadata) VALUES {values}',
        params,
    )
