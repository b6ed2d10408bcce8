"""The ``streamer`` command: options → Settings → application functions.

Exit codes: 0 ok, 2 usage or configuration error, 1 runtime error. Errors are
one line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from streamer.config import Settings, load_settings
from streamer.errors import StreamerError

_SETTING_FLAGS: list[tuple[str, type, str]] = [
    (name, info.annotation if info.annotation in (int, float) else str, info.description or "")  # type: ignore[misc]
    for name, info in Settings.model_fields.items()
    if name != "kafka_sasl_password"  # secrets: environment or config file only, never argv
]


def settings_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --config, --debug and one flag per setting; passes ``settings`` and ``debug``."""

    @functools.wraps(command)
    def wrapper(config: Path | None, debug: bool, **kwargs: Any) -> Any:
        overrides = {name: kwargs.pop(name) for name, _, _ in _SETTING_FLAGS}
        with _errors_to_exit_codes(debug):
            settings = load_settings(config, **overrides)
            logging.basicConfig(
                level="DEBUG" if debug else settings.log_level,
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                stream=sys.stderr,
            )
            return command(settings=settings, **kwargs)

    for name, kind, description in reversed(_SETTING_FLAGS):
        wrapper = click.option(f"--{name.replace('_', '-')}", name, type=kind, default=None, help=description)(wrapper)
    wrapper = click.option("--debug", is_flag=True, help="show tracebacks and debug logs")(wrapper)
    wrapper = click.option(
        "--config", type=click.Path(path_type=Path), default=None, help="YAML file with the same keys as the settings"
    )(wrapper)
    return wrapper


@contextlib.contextmanager
def _errors_to_exit_codes(debug: bool) -> Iterator[None]:
    """StreamerError → one line on stderr and its exit code; anything else → exit 1."""
    try:
        yield
    except (click.exceptions.Exit, click.ClickException, SystemExit):
        raise
    except KeyboardInterrupt:
        if debug:
            raise
        sys.exit(130)
    except BaseException as exc:
        if debug:
            raise
        text = str(exc).strip()
        message = text.splitlines()[0] if text else type(exc).__name__
        prefix = "" if isinstance(exc, StreamerError) else f"{type(exc).__name__}: "
        click.echo(f"streamer: error: {prefix}{message}", err=True)
        sys.exit(exc.exit_code if isinstance(exc, StreamerError) else 1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Team attribution for LiteLLM spend, from PostgreSQL logical replication."""


@main.command("setup")
@settings_options
def setup_command(settings: Settings) -> None:
    """Check the database, create publication, state schema and slot, load the snapshot."""
    from streamer.setup import setup

    report = setup(settings)
    if report.slot_created:
        rows = ", ".join(f"{table} {count}" for table, count in report.snapshot_rows.items())
        click.echo(f"slot {settings.slot} created at {report.consistent_point}; snapshot loaded: {rows}")
    else:
        click.echo(f"already set up: slot {settings.slot}, publication {settings.publication}")


@main.command("run")
@settings_options
def run_command(settings: Settings) -> None:
    """Stream and attribute until SIGINT/SIGTERM (then finish the batch, commit, ack, exit 0)."""
    from streamer.app import run_streamer

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    run_streamer(settings, stop)


@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@settings_options
def status_command(settings: Settings, as_json: bool) -> None:
    """Slot position, checkpoint, lag and counts."""
    from streamer.app import status

    report = status(settings)
    if as_json:
        click.echo(json.dumps(report))
    else:
        width = max(map(len, report))
        for key, value in report.items():
            click.echo(f"{key:<{width}}  {value}")


@main.command("teardown")
@click.option("--drop-state", is_flag=True, help="also drop the state schema: history and attributed rows")
@click.option("--yes", is_flag=True, help="do not ask")
@settings_options
def teardown_command(settings: Settings, drop_state: bool, yes: bool) -> None:
    """Drop the slot and the publication (and with --drop-state, everything streamer wrote)."""
    from streamer.app import teardown

    what = f"slot {settings.slot} and publication {settings.publication}"
    if drop_state:
        what += f" and schema {settings.state_schema} with all history and attributed rows"
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("teardown needs confirmation: pass --yes when not on a terminal")
        click.confirm(f"Drop {what}?", abort=True)
    dropped = teardown(settings, drop_state)
    click.echo("dropped: " + (", ".join(dropped) if dropped else "nothing (none existed)"))


@main.command("demo")
@click.option("--keep", is_flag=True, help="leave the cluster (and broker) running and print how to reach them")
@click.option("--kafka", is_flag=True, help="also start an embedded Kafka broker and show consumed records")
@settings_options
def demo_command(settings: Settings, keep: bool, kafka: bool) -> None:
    """Play a LiteLLM story on an ephemeral PostgreSQL and show what streamer keeps."""
    from streamer.demo import demo

    demo(settings, keep=keep, kafka=kafka)


if __name__ == "__main__":
    main()
