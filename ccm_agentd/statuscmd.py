"""``ccm-agentd status``: is a daemon running for this state dir, and how is it doing, for people."""

from __future__ import annotations

import json
import time
from typing import Any

from ccm_hooks import fileio, paths
from ccm_hooks.errors import CcmError
from ccm_hooks.statedir.agentd_lock import lock_held
from ccm_hooks.statedir.timefmt import format_age, parse_ts

ORDER = ("waiting", "error", "rate_limited", "stalled", "working", "processing", "starting", "idle", "ended")


def _counts(counts: dict[str, Any], order: tuple[str, ...] = ()) -> str:
    keys = [k for k in order if counts.get(k)] + sorted(k for k in counts if k not in order and counts[k])
    return ", ".join(f"{counts[k]} {k.replace('_', ' ')}" for k in keys) or "none"


def summary(health: dict[str, Any], now: float) -> list[str]:
    """The lines `ccm-agentd status` prints for a running daemon's health file."""
    beat = now - (parse_ts(health.get("heartbeat_at")) or 0)
    up = now - (parse_ts(health.get("started_at")) or now)
    lines = [
        f"ccm-agentd running (pid {health.get('pid')}) for {health.get('state_dir')}: up {format_age(up)}, "
        f"heartbeat {format_age(beat)} ago, loop lag {health.get('loop_lag_ms')} ms",
        f"sessions: {_counts(health.get('sessions') or {}, ORDER)}",
    ]
    queue = health.get("queue") or {}
    if queue:
        lines.append(f"queue: {len(queue)} pending")
        for item, info in sorted(queue.items())[:10]:
            lines.append(
                f"  {item}  to {str(info.get('session'))[:8]}  attempts {info.get('attempts', 0)}: "
                f"{info.get('waiting') or '-'}"
            )
    else:
        lines.append("queue: empty")
    for item, info in sorted((health.get("waits") or {}).items())[:10]:
        why = info.get("waiting") or "-"
        lines.append(f"not typed yet: {item} into {str(info.get('session'))[:8]}: {why}")
    deliveries = {k: v for k, v in (health.get("deliveries") or {}).items() if not k.startswith("state_")}
    changes = {k[6:]: v for k, v in (health.get("deliveries") or {}).items() if k.startswith("state_")}
    lines.append(f"deliveries since start: {_counts(deliveries, ('delivered', 'typed', 'retry', 'failed'))}")
    lines.append(f"sessions marked since start: {_counts(changes)}")
    for pane, why in sorted((health.get("screens") or {}).items()):
        lines.append(f"typed nothing into {pane}: {why}")
    lines.append(f"notifications: {health.get('notifications') or 'unknown'}")
    for name, facts in sorted((health.get("jobs") or {}).items()):
        shown = ", ".join(f"{k} {v}" for k, v in facts.items()) if isinstance(facts, dict) else str(facts)
        lines.append(f"{name}: {shown}")
    for error in health.get("config_errors") or []:
        lines.append(f"config.toml error (default used): {error}")
    return lines


def status_cmd(as_json: bool) -> int:
    root = paths.state_dir()
    try:
        health = fileio.read_json(paths.agentd_health_path(root))
    except (OSError, ValueError):
        health = None
    running = lock_held(root)
    if as_json:
        print(json.dumps({"running": running, "health": health}, indent=2))
        return 0 if running else 1
    if not running:
        raise CcmError(
            f"ccm-agentd is not running for {root}; start it: ccm-agentd run (or ccm-agentd install-service)"
        )
    if not isinstance(health, dict):
        print(f"ccm-agentd is running for {root} (no heartbeat yet)")
        return 0
    print("\n".join(summary(health, time.time())))
    return 0
