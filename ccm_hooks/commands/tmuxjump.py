"""Going to a session's tmux pane from ``top`` (Enter).

The status records where the session's claude runs: ``tmux_pane`` (``%3``) and ``tmux_socket`` (the
server's socket path). Inside tmux, on that same server, ``switch-client`` moves this client to the pane's
session, window and pane; top keeps running in its own pane. Outside tmux, ``attach-session`` takes over the
terminal: top hands it over (curses suspended) and is back when the user detaches. Inside tmux but on
another server, tmux refuses nested clients, so top says which command to run instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ccm_hooks.statedir.safetext import one_line

TMUX_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Plan:
    argv: list[str]  # empty: nothing to run, ``message`` says why
    attach: bool = False  # takes over the terminal
    message: str = ""
    pane: str = ""
    socket: str = ""


def _same_server(socket: str, environ: Mapping[str, str]) -> bool:
    ours = (environ.get("TMUX") or "").split(",", 1)[0]
    if not ours:
        return False
    try:
        return os.path.samefile(ours, socket)
    except OSError:
        return ours == socket


def plan(status: dict[str, Any], environ: Mapping[str, str]) -> Plan:
    """What Enter should run for this session, given where top itself runs."""
    sid = str(status.get("session_id") or "?")[:8]
    pane, socket = status.get("tmux_pane"), status.get("tmux_socket")
    if not isinstance(pane, str) or not pane.startswith("%") or not pane[1:].isdigit():
        return Plan([], message=f"{sid} does not run in tmux (no pane recorded)")
    if not isinstance(socket, str) or not socket:
        return Plan([], message=f"{sid}: its tmux server is not recorded")
    tmux = shutil.which("tmux")
    if tmux is None:
        return Plan([], message="tmux is not on PATH")
    base = [tmux, "-S", socket]
    if environ.get("TMUX"):
        if not _same_server(socket, environ):
            how = f"run `tmux -S {socket} attach -t {pane}` outside tmux"
            return Plan([], message=f"{sid} is on another tmux server: {how}")
        # The pane's session, then its window and the pane itself (one tmux command line).
        return Plan([*base, "switch-client", "-t", pane, ";", "select-window", "-t", pane, ";",
                     "select-pane", "-t", pane], pane=pane, socket=socket)  # fmt: skip
    return Plan([*base, "select-window", "-t", pane, ";", "select-pane", "-t", pane, ";",
                 "attach-session", "-t", pane], attach=True, pane=pane, socket=socket)  # fmt: skip


def run(p: Plan) -> str:
    """Run the plan; a one-line outcome for top's message line."""
    if not p.argv:
        return p.message
    pane = p.pane
    check = subprocess.run(
        [p.argv[0], "-S", p.socket, "display-message", "-p", "-t", pane, "#{pane_id}"],
        capture_output=True, text=True, timeout=TMUX_TIMEOUT_S, check=False,
    )  # fmt: skip
    if check.returncode != 0 or check.stdout.strip() != pane:
        return f"pane {pane} is gone (its tmux server or window closed)"
    if p.attach:
        code = subprocess.run(p.argv, check=False).returncode  # the terminal is tmux's until a detach
        return "back from tmux" if code == 0 else f"tmux attach failed (exit {code})"
    done = subprocess.run(p.argv, capture_output=True, text=True, timeout=TMUX_TIMEOUT_S, check=False)
    if done.returncode != 0:
        return f"tmux: {one_line(done.stderr or done.stdout, 200) or f'exit {done.returncode}'}"
    return f"switched to {pane}"
