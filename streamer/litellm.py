"""Writes rows the way the LiteLLM proxy does: for the demo, the tests and the benchmark.

Quoted Prisma identifiers, '' for no team, /key/delete archiving then deleting
without a surrounding transaction, spend written in multi-row INSERT batches.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Iterator
from functools import partial
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


def move_key(conn: psycopg.Connection, token: str, team_id: str) -> None:
    """/key/update with another team_id."""
    conn.execute('UPDATE "LiteLLM_VerificationToken" SET team_id = %s WHERE token = %s', (team_id, token))


def rename_team(conn: psycopg.Connection, team_id: str, alias: str) -> None:
    """/team/update with another team_alias."""
    conn.execute('UPDATE "LiteLLM_TeamTable" SET team_alias = %s WHERE team_id = %s', (alias, team_id))


Operation = Callable[[psycopg.Connection], None]


class RandomWorkload:
    """A seeded, replayable LiteLLM life: teams and keys come and go while spend is written.

    ``operations()`` yields callables taking a connection; the same seed gives
    the same operations, so two databases can play the same story.
    """

    def __init__(self, seed: int, batches: int, rows_per_batch: int = 100) -> None:
        self.random = random.Random(seed)
        self.batches = batches
        self.rows_per_batch = rows_per_batch

    def operations(self) -> Iterator[Operation]:
        rnd = self.random
        teams = [f"team-{i}" for i in range(6)]
        for index, team in enumerate(teams):
            yield partial(add_team, team_id=team, alias=f"Team {index}")
        keys: list[str] = []
        dead: list[str] = []  # deleted or rotated away: their late spend still arrives
        serial = 0
        request = 0
        for _ in range(self.batches):
            for _ in range(rnd.randint(0, 3)):
                action = rnd.choice(["add", "add", "delete", "rotate", "move", "rename"])
                serial += 1
                if action == "add" or not keys:
                    token = key_hash(f"sk-{serial}")
                    keys.append(token)
                    yield partial(add_key, token=token, alias=f"key-{serial}", team_id=rnd.choice(teams))
                elif action == "delete":
                    token = keys.pop(rnd.randrange(len(keys)))
                    dead.append(token)
                    yield partial(delete_key, token=token, archive=rnd.random() < 0.5)
                elif action == "rotate":
                    old = keys.pop(rnd.randrange(len(keys)))
                    new = key_hash(f"sk-rotated-{serial}")
                    keys.append(new)
                    dead.append(old)
                    yield partial(rotate_key, old=old, new=new)
                elif action == "move":
                    yield partial(move_key, token=rnd.choice(keys), team_id=rnd.choice(teams))
                else:
                    yield partial(rename_team, team_id=rnd.choice(teams), alias=f"Renamed {serial}")
            rows = []
            for _ in range(self.rows_per_batch):
                request += 1
                pool = keys if not dead or rnd.random() < 0.8 else dead
                api_key = rnd.choice(pool) if pool and rnd.random() < 0.95 else rnd.choice(["", "litellm_proxy_master_key"])
                rows.append(spend_row(f"req-{request:07d}", api_key, spend=round(rnd.random(), 6)))
            yield partial(write_spend, rows=rows)
