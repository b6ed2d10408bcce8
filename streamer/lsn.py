"""Log sequence numbers: PostgreSQL prints them as ``X/Y``, the protocol sends 64-bit ints."""

from __future__ import annotations

Lsn = int


def parse_lsn(text: str) -> Lsn:
    """``'0/16B3748'`` → ``23803720``."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(lsn: Lsn) -> str:
    """``23803720`` → ``'0/16B3748'``, the form pg_lsn accepts."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"
