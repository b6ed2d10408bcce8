"""The errors streamer raises on purpose: each names what went wrong and what to do."""


class StreamerError(Exception):
    """A runtime failure the user can act on (exit code 1)."""

    exit_code = 1


class ConfigError(StreamerError):
    """A missing or invalid setting (exit code 2)."""

    exit_code = 2


class DecodeError(StreamerError):
    """A pgoutput message that cannot be decoded; the stream stops, nothing is skipped."""


class SlotInUse(StreamerError):
    """Another process streams the slot: a standby waits and takes over when it ends."""


class SinkUnavailable(StreamerError):
    """A sink cannot make a batch durable (e.g. the broker is down): restart from the checkpoint."""


class CannotConnect(StreamerError):
    """A database refused or did not answer a connection."""


class ConnectionLost(StreamerError):
    """A connection dropped while streaming: restart from the checkpoint."""
