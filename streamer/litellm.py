"""Writes rows the way the LiteLLM proxy does: for the demo, the tests and the benchmark.

Quoted Prisma identifiers, '' for no team, /key/delete archiving then deleting
without a surrounding transaction, spend written in multi-row INSERT batches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
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


def realistic_metadata(key: str, key_alias: str | None, team_id: str | None, team_alias: str | None) -> dict[str, Any]:
    """The metadata the proxy writes into a spend row (as it saw the key at request time)."""
    return {
        "user_api_key": key,
        "user_api_key_alias": key_alias,
        "user_api_key_team_id": team_id,
        "user_api_key_team_alias": team_alias,
        "user_api_key_user_id": "default_user_id",
        "user_api_key_org_id": None,
        "spend_logs_metadata": None,
        "requester_ip_address": "10.0.0.7",
        "model_map_information": {"model_map_key": "gpt-4o-mini", "model_map_value": {"max_tokens": 16384}},
        "usage_object": {"completion_tokens": 5, "prompt_tokens": 10, "total_tokens": 15},
    }


class RandomWorkload:
    """A seeded, replayable LiteLLM life: teams and keys come and go while spend is written.

    ``operations()`` yields callables taking a connection; the same seed gives
    the same operations, so two databases can play the same story.
    """

    def __init__(self, seed: int, batches: int, rows_per_batch: int = 100) -> None:
        import random

        self.random = random.Random(seed)
        self.batches = batches
        self.rows_per_batch = rows_per_batch

    def operations(self) -> Iterable[Callable[[psycopg.Connection], None]]:
        rnd = self.random
        teams = [f"team-{i}" for i in range(6)]
        for index, team in enumerate(teams):
            yield lambda c, t=team, i=index: add_team(c, t, f"Team {i}")
        keys: list[str] = []
        dead: list[str] = []
        serial = 0
        request = 0
        for batch in range(self.batches):
            for _ in range(rnd.randint(0, 3)):
                action = rnd.choice(["add", "add", "delete", "rotate", "move", "rename"])
                serial += 1
                if action == "add" or not keys:
                    token = key_hash(f"sk-{serial}")
                    keys.append(token)
                    yield lambda c, k=token, a=f"key-{serial}", t=rnd.choice(teams): add_key(c, k, a, t)
                elif action == "delete":
                    token = keys.pop(rnd.randrange(len(keys)))
                    dead.append(token)
                    yield lambda c, k=token, archive=rnd.random() < 0.5: delete_key(c, k, archive)
                elif action == "rotate":
                    old = keys.pop(rnd.randrange(len(keys)))
                    new = key_hash(f"sk-rotated-{serial}")
                    keys.append(new)
                    dead.append(old)
                    yield lambda c, o=old, n=new: rotate_key(c, o, n)
                elif action == "move":
                    yield lambda c, k=rnd.choice(keys), t=rnd.choice(teams): c.execute(
                        'UPDATE "LiteLLM_VerificationToken" SET team_id = %s WHERE token = %s', (t, k)
                    )
                else:
                    yield lambda c, t=rnd.choice(teams), s=serial: c.execute(
                        'UPDATE "LiteLLM_TeamTable" SET team_alias = %s WHERE team_id = %s', (f"Renamed {s}", t)
                    )
            rows = []
            for _ in range(self.rows_per_batch):
                request += 1
                pool = keys if not dead or rnd.random() < 0.8 else dead  # late rows of gone keys
                api_key = rnd.choice(pool) if pool and rnd.random() < 0.95 else rnd.choice(["", "litellm_proxy_master_key"])
                rows.append(spend_row(f"req-{request:07d}", api_key, spend=round(rnd.random(), 6)))
            yield lambda c, r=rows: write_spend(c, r)
