"""Times as ccm writes and shows them: the records' ISO ``ts``, ages (``5m``), ``--since`` arguments."""

from __future__ import annotations

import datetime as dt

from ccm_hooks.errors import CcmError
from ccm_hooks.record import iso_utc

__all__ = ["format_age", "iso_utc", "parse_age", "parse_since", "parse_ts", "shift_ts"]

_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> float | None:
    """Seconds for an age such as ``90s``, ``15m``, ``2h``, ``1.5d``, ``2w``; None if it is not one.
    (String methods, not ``re``: the read commands import this on every run.)"""
    text = text.strip()
    number, unit = text[:-1].rstrip(), text[-1:]
    head, dot, tail = number.partition(".")
    digits = head.isascii() and head.isdigit() and (not dot or (tail.isascii() and tail.isdigit()))
    return float(number) * _UNIT_S[unit] if unit in _UNIT_S and digits else None


def parse_ts(value: object) -> float | None:
    """Seconds since the epoch for one of our ISO timestamps, or None."""
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def shift_ts(ts: str, seconds: float) -> str:
    """One of our timestamps moved by ``seconds`` (negative: earlier); "" if ``ts`` is not one."""
    when = parse_ts(ts)
    return iso_utc(when + seconds) if when is not None else ""


def parse_since(text: str, now: float) -> str:
    """``--since`` as one of our fixed-width UTC timestamps (which compare as strings)."""
    age = parse_age(text)
    try:
        if age is not None:
            return iso_utc(now - age)
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.astimezone()  # a bare time means local time, as `date` would print it
        return iso_utc(when.timestamp())
    except (ValueError, OverflowError, OSError):
        raise CcmError(
            f"--since {text!r} is neither an ISO time (2026-11-21T09:30, 2026-11-21 09:30:00Z) "
            "nor an age (90s, 15m, 2h, 1d) this machine can represent"
        ) from None


def format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
