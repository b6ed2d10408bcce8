"""``streamer demo``: a LiteLLM story on an ephemeral PostgreSQL, and what streamer keeps of it.

Needs no configuration. The cluster runs with fsync on: what the demo shows
committed is committed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from importlib.resources import files

import psycopg
from rich.console import Console
from rich.table import Table

from streamer.app import run_streamer
from streamer.config import Settings, load_settings
from streamer.devdb import EphemeralPostgres
from streamer.errors import StreamerError
from streamer.litellm import (
    add_key,
    add_org,
    add_team,
    delete_key,
    delete_team,
    key_hash,
    realistic_metadata,
    rename_team,
    rotate_key,
    spend_row,
    write_spend,
)

SEARCH, BILLING, RESEARCH = "team-search", "team-billing", "team-research"
KEYS = {
    "search-prod": (key_hash("sk-demo-search-prod"), SEARCH),
    "billing-bot": (key_hash("sk-demo-billing-bot"), BILLING),
    "research-nb": (key_hash("sk-demo-research-notebook"), RESEARCH),
    "intern": (key_hash("sk-demo-intern"), SEARCH),
}
ROTATED_SEARCH = key_hash("sk-demo-search-prod-rotated")

LIVE_JOIN = """
SELECT coalesce(t.team_alias, '') AS team, count(*), round(sum(s.spend)::numeric, 4)
  FROM "LiteLLM_SpendLogs" s
  LEFT JOIN "LiteLLM_VerificationToken" k ON k.token = s.api_key
  LEFT JOIN "LiteLLM_TeamTable" t ON t.team_id = k.team_id
 GROUP BY 1 ORDER BY 1
"""
ATTRIBUTED = """
SELECT coalesce(n.team_alias || CASE WHEN n.deleted THEN ' (deleted)' ELSE '' END,
                '(' || a.unattributed_reason || ')'),
       count(*), round(sum(a.spend)::numeric, 4)
  FROM litellm_attribution.spend_attribution a
  LEFT JOIN litellm_attribution.team_names n USING (team_id)
 GROUP BY 1 ORDER BY 1
"""


class _Story:
    """The proxy's life: each step prints what happened."""

    def __init__(self, conn: psycopg.Connection, console: Console) -> None:
        self.conn = conn
        self.console = console
        self.requests = 0
        self.buffer: list[tuple] = []

    def step(self, text: str) -> None:
        self.console.print(f"  • {text}")

    def requests_from(self, name: str, count: int, api_key: str | None = None, spend: float = 0.02) -> None:
        """Requests served: the proxy buffers their spend rows (written every 10-60 s)."""
        token, team = KEYS[name]
        alias = self.conn.execute('SELECT team_alias FROM "LiteLLM_TeamTable" WHERE team_id = %s', (team,)).fetchone()
        for _ in range(count):
            self.requests += 1
            meta = realistic_metadata(api_key or token, name, team, alias[0] if alias else None)
            self.buffer.append(spend_row(f"demo-{self.requests:04d}", api_key or token, spend=spend, metadata=meta))

    def flush_spend(self) -> None:
        self.step(f"the proxy's batch writer lands {len(self.buffer)} buffered spend rows")
        write_spend(self.conn, self.buffer)
        self.buffer = []

    def play(self) -> None:
        c = self.conn
        add_org(c, "org-acme", "Acme Corp")
        add_team(c, SEARCH, "Search", "org-acme")
        add_team(c, BILLING, "Billing", "org-acme")
        add_team(c, RESEARCH, "Research", "org-acme")
        for name, (token, team) in KEYS.items():
            add_key(c, token, name, team)
        self.step("teams Search, Billing, Research and keys search-prod, billing-bot, research-nb, intern created")
        for name in KEYS:
            self.requests_from(name, 5)
        self.flush_spend()
        self.requests_from("billing-bot", 4, spend=0.05)
        self.step("billing-bot is deleted (/key/delete) while 4 of its requests are still buffered")
        delete_key(c, KEYS["billing-bot"][0])
        self.flush_spend()
        self.requests_from("search-prod", 3)
        self.step("search-prod is rotated (/key/regenerate): its hash changes in place")
        rotate_key(c, KEYS["search-prod"][0], ROTATED_SEARCH)
        self.requests_from("search-prod", 3, api_key=ROTATED_SEARCH)
        self.flush_spend()
        self.requests_from("research-nb", 4)
        self.flush_spend()
        self.step("team Research is renamed to Applied Research")
        rename_team(c, RESEARCH, "Applied Research")
        self.requests_from("research-nb", 2)
        self.requests_from("intern", 3)
        self.step("team Search is deleted (/team/delete removes its keys too)")
        delete_team(c, SEARCH)
        self.flush_spend()


def _table(rows: list[tuple]) -> Table:
    table = Table()
    table.add_column("team name")
    table.add_column("requests", justify="right")
    table.add_column("spend $", justify="right")
    for team, count, spend in rows:
        table.add_row(team or "[red](blank)[/red]", str(count), str(spend))
    return table


def _wait_until_attributed(conn: psycopg.Connection, slot: str, streamer: threading.Thread, timeout: float = 60) -> None:
    target = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]  # type: ignore[index]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and streamer.is_alive():
        row = conn.execute(
            "SELECT confirmed_flush_lsn >= %s FROM pg_replication_slots WHERE slot_name = %s", (target, slot)
        ).fetchone()
        if row and row[0]:
            return
        time.sleep(0.05)
    raise StreamerError("the demo's streamer did not catch up within 60 s")


def _show_kafka_records(console: Console, bootstrap: str, topic: str) -> None:
    """A few consumed records: the deleted key's late spend keeps its team."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    values = []
    for _ in range(8):
        for records in consumer.poll(timeout_ms=250).values():
            values.extend(json.loads(record.value) for record in records)
    consumer.close()
    table = Table()
    for column in ("request_id", "key_alias", "team_alias", "attribution_source", "commit_lsn"):
        table.add_column(column)
    shown = sorted((v for v in values if v["key_alias"] in ("billing-bot", "search-prod")), key=lambda v: v["request_id"])
    for value in shown[-8:]:
        table.add_row(value["request_id"], value["key_alias"], value["team_alias"], value["attribution_source"],
                      value["commit_lsn"])
    console.print(f"[bold]{len(values)} records consumed from Kafka topic {topic}[/bold], the last of deleted and rotated keys:")
    console.print(table)


def demo(settings: Settings, keep: bool = False, kafka: bool = False) -> None:
    console = Console()
    streamer_logger = logging.getLogger("streamer")
    streamer_logger.setLevel(max(logging.WARNING, streamer_logger.getEffectiveLevel()))
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    console.print("[bold]streamer demo[/bold]: starting an ephemeral PostgreSQL with wal_level=logical")
    cluster = EphemeralPostgres(durable=True).start()
    broker = None
    try:
        if kafka:
            from streamer.devkafka import EmbeddedKafka

            console.print("starting an embedded Kafka-protocol broker (Tansu, in memory)")
            broker = EmbeddedKafka().start()
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            conn.execute(files("streamer").joinpath("litellm_schema.sql").read_text())
            demo_settings = load_settings(
                source_dsn=cluster.dsn,
                flush_interval=0.05,
                batch_size=settings.batch_size,
                slot=settings.slot,
                publication=settings.publication,
                kafka_bootstrap=broker.bootstrap if broker else None,
                kafka_client=settings.kafka_client,
            )
            stop = threading.Event()
            failure: list[BaseException] = []

            def stream() -> None:
                try:
                    run_streamer(demo_settings, stop)
                except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                    failure.append(exc)

            streamer = threading.Thread(target=stream, name="streamer")
            streamer.start()
            while not conn.execute(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s AND active", (demo_settings.slot,)
            ).fetchone():
                if failure:
                    raise failure[0]
                time.sleep(0.02)
            console.print("streamer is running. The proxy's story:")
            _Story(conn, console).play()
            _wait_until_attributed(conn, demo_settings.slot, streamer)
            stop.set()
            streamer.join()
            if failure:
                raise failure[0]
            console.print()
            console.print("[bold]Spend by team, as a report joining the live tables sees it[/bold]")
            console.print(_table(conn.execute(LIVE_JOIN).fetchall()))
            console.print("[bold]Spend by team, as streamer attributed it[/bold]")
            console.print(_table(conn.execute(ATTRIBUTED).fetchall()))
            console.print(
                "Each spend row keeps the team it was spent by, whatever happened to its key or team later "
                "(teams by their current or last name; spend_attribution.team_alias keeps the name of the time)."
            )
            if broker:
                _show_kafka_records(console, broker.bootstrap, demo_settings.kafka_spend_topic)
    except BaseException:
        cluster.stop()
        if broker:
            broker.stop()
        raise
    if keep:
        console.print(f"\ncluster kept: DSN [bold]{cluster.dsn}[/bold]")
        console.print(f"stop it with: pg_ctl -D {cluster.datadir} stop  (as the user who owns it), then rm -r {cluster.root}")
        if broker:
            console.print(f"Kafka kept: bootstrap [bold]{broker.bootstrap}[/bold] (pid {broker.pid})")
    else:
        cluster.stop()
        if broker:
            broker.stop()
