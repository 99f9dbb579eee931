"""The tmux side of ccm-agentd, through libtmux: is a session's pane alive and running claude, what does it
show, and typing into it.

Every call names the server by the socket path the hooks recorded (``tmux_socket``: the part of ``$TMUX``
before the first comma), so sessions on any number of tmux servers are reachable, and never the user's
default server by accident.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import libtmux

from ccm_agentd import screen

_LINUX = sys.platform.startswith("linux")  # a variable, not a condition mypy narrows: both paths are real


@dataclass(frozen=True)
class PaneInfo:
    dead: bool
    pid: int | None
    command: str


class Tmux:
    def __init__(self, tmux_bin: str | None = None) -> None:
        self.tmux_bin = tmux_bin or os.environ.get("CCM_TMUX") or None
        self._servers: dict[str, libtmux.Server] = {}

    def _server(self, socket: str) -> libtmux.Server:
        server = self._servers.get(socket)
        if server is None:
            server = libtmux.Server(socket_path=socket, tmux_bin=self.tmux_bin)
            self._servers[socket] = server
        return server

    def _cmd(self, socket: str, *args: str) -> list[str] | None:
        """stdout lines, or None if tmux failed (no server on that socket, no such pane)."""
        if not os.path.exists(socket):
            return None
        result = self._server(socket).cmd(*args)
        if result.returncode != 0 or result.stderr:
            return None
        return list(result.stdout)

    def pane_info(self, socket: str, pane: str) -> PaneInfo | None:
        """None when the server or the pane is gone."""
        out = self._cmd(
            socket, "display-message", "-p", "-t", pane, "#{pane_dead}|#{pane_pid}|#{pane_current_command}"
        )
        if not out:
            return None
        dead, pid, command = [*out[0].split("|", 2), "", ""][:3]
        return PaneInfo(dead == "1", int(pid) if pid.isdigit() else None, command)

    def capture(self, socket: str, pane: str) -> str | None:
        out = self._cmd(socket, "capture-pane", "-p", "-t", pane)
        return None if out is None else "\n".join(out)

    def view(self, socket: str, pane: str) -> screen.View | None:
        """The pane's screen with attributes, and where the cursor is, from ONE tmux command list: the
        server runs both commands without reading the pane's output in between, so they see one frame."""
        fmt = "#{pane_dead}|#{pane_in_mode}|#{pane_width}|#{cursor_x}|#{cursor_y}"
        out = self._cmd(
            socket, "display-message", "-p", "-t", pane, fmt, ";", "capture-pane", "-p", "-e", "-t", pane
        )
        if not out:
            return None
        fields = out[0].split("|")
        if len(fields) != 5 or not all(f.isdigit() for f in fields):
            return None
        dead, in_mode, width, x, y = (int(f) for f in fields)
        return screen.View(out[1:], x, y, width, in_mode=bool(in_mode), dead=bool(dead))

    def paste(self, socket: str, pane: str, text: str, buffer: str) -> bool:
        """Put ``text`` into the pane as a bracketed paste (``load-buffer`` from stdin, ``paste-buffer -p``).

        The text never passes through tmux's argument parser, which would take a final ``;`` for a command
        separator and a leading ``-`` for flags (spec/typing.md); a short one-line paste reaches Claude
        Code's input box exactly as typed text does.
        """
        tmux = self.tmux_bin or shutil.which("tmux") or "tmux"
        try:
            loaded = subprocess.run(
                [tmux, "-S", socket, "load-buffer", "-b", buffer, "-"], input=text.encode("utf-8"),
                capture_output=True, timeout=10,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return False
        if loaded.returncode != 0:
            return False
        return self._cmd(socket, "paste-buffer", "-p", "-d", "-b", buffer, "-t", pane) is not None

    def press(self, socket: str, pane: str, key: str) -> bool:
        """Press one key by its tmux name (``Enter``, ``Escape``, ``C-u``)."""
        return self._cmd(socket, "send-keys", "-t", pane, key) is not None

    def press_enter(self, socket: str, pane: str) -> bool:
        return self.press(socket, pane, "Enter")


def runs_claude(info: PaneInfo, claude_pid: object) -> bool:
    """The pane's process is claude, or claude (the pid the hooks recorded) runs below it."""
    if "claude" in info.command:
        return True
    if not isinstance(claude_pid, int) or info.pid is None:
        return False
    return info.pid in ancestors(claude_pid)


def ancestors(pid: int, limit: int = 32) -> list[int]:
    """``pid`` and its parents, nearest first (Linux: /proc; elsewhere ``ps``)."""
    chain: list[int] = []
    while pid > 1 and len(chain) < limit:
        chain.append(pid)
        parent = _parent(pid)
        if parent is None:
            break
        pid = parent
    return chain


def _proc_stat(pid: int) -> list[bytes] | None:
    """Linux: the fields of /proc/<pid>/stat after the command name (state, ppid, ...), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return data[data.rfind(b")") + 2 :].split()


def _parent(pid: int) -> int | None:
    if _LINUX:
        fields = _proc_stat(pid)
        return int(fields[1]) if fields is not None and len(fields) > 1 else None
    import subprocess

    try:
        out = subprocess.run(["ps", "-o", "ppid=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.strip()
    return int(text) if text.isdigit() else None


def pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    if _LINUX:
        # A zombie has exited; its parent just has not reaped it yet (tmux can take seconds to).
        fields = _proc_stat(pid)
        return fields is not None and bool(fields) and fields[0] != b"Z"
    return True
