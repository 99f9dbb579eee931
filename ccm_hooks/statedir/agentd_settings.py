"""``[agentd]`` in config.toml: every setting ccm-agentd reads, with its default and what is allowed.

One place, so the daemon, ``doctor`` and the docs agree. A value that is missing takes its default; one that
is wrong (a type, a range, ``inf``, ``nan``, an unknown key) is reported and takes its default too: a typo in
one line must neither stop the daemon nor, say, turn ``liveness_s = 0`` into a busy loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

DAY = 86400.0


@dataclass(frozen=True)
class AgentdSettings:
    stall_after_s: float = 600.0
    waiting_notify_after_s: float = 120.0
    liveness_s: float = 10.0
    rate_limit_wait_s: float = 3600.0
    rate_limit_jitter_s: float = 60.0
    # A claude.ai usage limit on a Claude Code that continues by itself at the reset (2.1.234 and later,
    # 30-90 s after it): ccm's own resume waits this much longer, and is typed only if that did not happen.
    self_continue_grace_s: float = 120.0
    resume_prompt: str = "continue"
    notify_commands: tuple[str, ...] = ()
    notify_desktop: bool = True
    notify_timeout_s: float = 10.0
    notify_headless: bool = False  # `finished` for `claude -p` runs: off, 12 parallel runs are not 12 pings
    queue_expiry_s: float = DAY  # a queued prompt not typed by then fails as expired
    heartbeat_s: float = 15.0  # health.json and metrics.prom; hooks think the daemon gone after 90 s
    errors: tuple[str, ...] = field(default=(), compare=False)


# (lowest, highest) allowed for each number, inclusive.
RANGES: dict[str, tuple[float, float]] = {
    "stall_after_s": (1.0, 7 * DAY),
    "waiting_notify_after_s": (0.0, 7 * DAY),
    "liveness_s": (0.1, 3600.0),
    "rate_limit_wait_s": (1.0, 7 * DAY),
    "rate_limit_jitter_s": (0.0, 3600.0),
    "self_continue_grace_s": (0.0, 3600.0),
    "notify_timeout_s": (0.1, 600.0),
    "queue_expiry_s": (10.0, 30 * DAY),
    "heartbeat_s": (1.0, 60.0),
}
BOOLS = ("notify_desktop", "notify_headless")


def parse(table: object) -> AgentdSettings:
    """The settings of an ``[agentd]`` table (a dict from tomllib), each error in ``errors``."""
    from ccm_hooks.texts import TextError, check_typed

    if table is None:
        table = {}
    if not isinstance(table, dict):
        return AgentdSettings(errors=("[agentd] must be a table",))
    known = {f.name for f in fields(AgentdSettings)} - {"errors"}
    values: dict[str, Any] = {}
    errors: list[str] = []
    for key, value in table.items():
        where = f"[agentd] {key}"
        if key not in known:
            errors.append(f"{where}: unknown setting (known: {', '.join(sorted(known))})")
        elif key in RANGES:
            low, high = RANGES[key]
            number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            if number is None or not math.isfinite(number) or not low <= number <= high:
                errors.append(f"{where} = {value!r}: must be a number from {low:g} to {high:g}")
            else:
                values[key] = float(number)
        elif key in BOOLS:
            if isinstance(value, bool):
                values[key] = value
            else:
                errors.append(f"{where} = {value!r}: must be true or false")
        elif key == "resume_prompt":
            try:
                values[key] = check_typed(value)
            except TextError as exc:
                errors.append(f"{where}: {exc}")
        elif key == "notify_commands":
            if isinstance(value, list) and all(isinstance(c, str) for c in value):
                values[key] = tuple(c for c in value if c.strip())
            else:
                errors.append(f"{where}: must be a list of shell commands (strings)")
    return AgentdSettings(**values, errors=tuple(errors))
