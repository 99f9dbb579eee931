"""Times as ccm writes and shows them: the records' ISO ``ts``, ages (``5m``), ``--since`` arguments."""

from __future__ import annotations

import datetime as dt
import re

from ccm_hooks.errors import CcmError

_AGE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_ts(value: object) -> float | None:
    """Seconds since the epoch for one of our ISO timestamps, or None."""
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_since(text: str, now: float) -> str:
    """``--since`` as one of our fixed-width UTC timestamps (which compare as strings)."""
    from ccm_hooks.record import iso_utc

    age = _AGE_RE.fullmatch(text.strip())
    if age:
        return iso_utc(now - float(age.group(1)) * _UNIT_S[age.group(2)])
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CcmError(
            f"--since {text!r} is neither an ISO time (2026-11-21T09:30, 2026-11-21 09:30:00Z) "
            "nor an age (90s, 15m, 2h, 1d)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # a bare time means local time, as `date` would print it
    return iso_utc(when.timestamp())


def format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
