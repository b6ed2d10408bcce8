"""An ephemeral PostgreSQL cluster with wal_level=logical, for the demo and the tests.

initdb refuses to run as root, so when we are root the cluster is created and
started as the ``postgres`` OS user, in a directory that user owns.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from streamer.errors import StreamerError

_SERVER_SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "shared_buffers": "128MB",
    "max_connections": "100",
}


def _find_bindir() -> Path:
    """The folder of initdb/pg_ctl: pg_config's, or the newest Debian one."""
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    if initdb := shutil.which("initdb"):
        return Path(initdb).parent
    raise StreamerError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: "
        "install them with `apt-get install -y postgresql`"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EphemeralPostgres:
    """initdb + pg_ctl in a temporary directory; stop() removes everything."""

    def __init__(self, *, durable: bool = True, settings: dict[str, str] | None = None) -> None:
        self.bindir = _find_bindir()
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="streamer-pg-"))
        self.datadir = self.root / "data"
        self.durable = durable
        self.settings = settings or {}
        self._as_postgres = os.geteuid() == 0

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def dsn_for(self, dbname: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StreamerError(f"{args[0]} failed: {result.stderr.strip() or result.stdout.strip()}")

    def start(self) -> EphemeralPostgres:
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        settings = dict(_SERVER_SETTINGS, port=str(self.port))
        if not self.durable:
            settings.update(fsync="off", full_page_writes="off")
        settings.update(self.settings)
        with open(self.datadir / "postgresql.auto.conf", "a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        with open(self.datadir / "pg_hba.conf", "w") as hba:
            hba.write("host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n")
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")
        return self

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.root / "server.log"), "-w", "-t", "60", "-m", "fast", "restart")

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.datadir), "-w", "-t", "60", "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EphemeralPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
