"""Starting a Claude Code agent: its command line, its environment, and the tmux window it runs in.

Shared by ccm-agentd's task launcher and ``ccm-hooks start``; facts behind each choice are in
spec/tasks.md#starting-the-agent (checked on Claude Code 2.1.197 and 2.1.328):

- the prompt is the last argument, after ``--``: Claude Code submits it as the first prompt, and the
  UserPromptSubmit hook carries it exactly (newlines, quotes, a leading ``-`` or ``!``); nothing is typed;
- ``--session-id`` is chosen by ccm, so the session's files are known before it starts;
- ``--settings`` carries ccm's hook entries: the agent is recorded whether or not the project installed
  them (Claude Code runs an identical hook command once, wherever it is registered);
- ``manual`` (2.1.328's name for the asking mode) is passed as ``default``, which both versions accept.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ccm_hooks.errors import CcmError

TMUX_TIMEOUT_S = 10.0
SESSION = "ccm"


def find_claude(configured: str | None = None) -> str:
    """The claude to run: ``[tasks] claude``, ``$CCM_CLAUDE`` (set by install-service), else PATH."""
    for candidate in (configured, os.environ.get("CCM_CLAUDE")):
        if candidate:
            found = shutil.which(candidate)
            if found:
                return found
    for candidate in (
        "claude",
        os.path.expanduser("~/.local/bin/claude"),
        os.path.expanduser("~/.claude/local/claude"),
    ):
        found = shutil.which(candidate)
        if found:
            return found
    raise CcmError('claude is not on PATH; set `claude = "/path/to/claude"` under [tasks] in config.toml')


def hook_settings() -> str:
    """``--settings`` JSON registering ccm's handler for every event it records, as ``ccm-hooks install``
    writes them (same commands, so Claude Code runs each once even where the project installed them too)."""
    from ccm_hooks.commands import settings_merge  # pure data and merging; no typer

    return json.dumps(
        {"hooks": {event: [settings_merge.our_group(event)] for event in settings_merge.EVENTS}}
    )


def claude_argv(
    claude: str,
    prompt: str | None,
    *,
    session_id: str,
    name: str | None = None,
    model: str | None = None,
    permission_mode: str | None = None,
    headless: bool = False,
) -> list[str]:
    argv = [claude]
    if headless:
        argv += ["-p", "--output-format", "stream-json", "--verbose"]
    argv += ["--session-id", session_id, "--settings", hook_settings()]
    if name:
        argv += ["--name", name]
    if model:
        argv += ["--model", model]
    if permission_mode:
        argv += ["--permission-mode", "default" if permission_mode == "manual" else permission_mode]
    if prompt is not None:
        argv += ["--", prompt]
    return argv


def agent_env(
    root: str,
    *,
    task_id: str | None,
    max_turns: int | None,
    done_marker: str | None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """What the agent's environment gets on top of its tmux server's (or, headless, the daemon's)."""
    env = dict(extra or {})
    env["CCM_HOME"] = root
    if task_id:
        env["CCM_TASK_ID"] = task_id
    # Watch settings for this launch (spec/watch.md): max_turns 0 means watch off; None leaves it to the
    # config.toml defaults.
    if max_turns is not None:
        env["CCM_WATCH"] = "1" if max_turns > 0 else "0"
    if max_turns:
        env["CCM_WATCH_MAX_TURNS"] = str(max_turns)
    if done_marker:
        env["CCM_WATCH_DONE_MARKER"] = done_marker
    return env


_memory_cap: dict[str, str | None] = {}


def memory_cap_prefix(memory_max: str | None) -> tuple[list[str], str]:
    """(argv prefix, what it means) for a per-agent memory cap through a systemd user scope."""
    if not memory_max:
        return [], "no memory cap configured"
    if "probe" not in _memory_cap:
        _memory_cap["probe"] = _probe_systemd_run()
    why = _memory_cap["probe"]
    if why is not None:
        return [], f"memory cap {memory_max} unavailable: {why}"
    prefix = [
        "systemd-run",
        "--user",
        "--scope",
        "--quiet",
        "--collect",
        "-p",
        f"MemoryMax={memory_max}",
        "--",
    ]
    return prefix, f"memory capped at {memory_max} (systemd user scope)"


def _probe_systemd_run() -> str | None:
    """None if ``systemd-run --user --scope`` works here, else why not."""
    if shutil.which("systemd-run") is None:
        return "systemd-run is not installed"
    try:
        out = subprocess.run(["systemd-run", "--user", "--scope", "--quiet", "true"], capture_output=True,
                             text=True, timeout=10, stdin=subprocess.DEVNULL)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"systemd-run failed: {exc}"
    if out.returncode != 0:
        return (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]
    return None


# --- tmux --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    window_id: str
    pane_id: str
    pane_pid: int | None
    name: str = ""
    dead: bool = False


class Tmux:
    """The tmux server agents run on: ``socket`` a path (``-S``) or a name (``-L``); None: the default."""

    def __init__(self, socket: str | None = None, tmux_bin: str | None = None) -> None:
        self.socket = socket or None
        self.tmux_bin = tmux_bin or os.environ.get("CCM_TMUX") or "tmux"

    def argv(self, *args: str) -> list[str]:
        where = [] if not self.socket else ["-S" if "/" in self.socket else "-L", self.socket]
        return [self.tmux_bin, *where, *args]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            out = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=TMUX_TIMEOUT_S,
                                 stdin=subprocess.DEVNULL, errors="replace")  # fmt: skip
        except FileNotFoundError:
            raise CcmError(f"tmux not found ({self.tmux_bin}); install it") from None
        except subprocess.TimeoutExpired:
            raise CcmError(f"tmux {args[0]} did not answer within {TMUX_TIMEOUT_S:.0f} s") from None
        if check and out.returncode != 0:
            raise CcmError(f"tmux {args[0]}: {out.stderr.strip() or f'exit {out.returncode}'}")
        return out

    def socket_path(self) -> str | None:
        """The server's socket path as hooks record it (``#{socket_path}``), or None if no server runs."""
        out = self.run("display-message", "-p", "#{socket_path}", check=False)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
        if self.socket and "/" in self.socket:
            return self.socket
        return None

    def has_session(self, session: str = SESSION) -> bool:
        return self.run("has-session", "-t", f"={session}", check=False).returncode == 0

    def new_window(
        self, name: str, cwd: str, argv: Sequence[str], env: Mapping[str, str], session: str = SESSION
    ) -> Window:
        """A new window running ``argv`` in ``session`` (created, detached, if it does not exist)."""
        fmt = "#{window_id}\t#{pane_id}\t#{pane_pid}"
        env_args = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
        common = ["-d", "-P", "-F", fmt, "-n", name, "-c", cwd, *env_args]
        if self.has_session(session):
            out = self.run("new-window", *common, "-t", f"={session}:", "--", *argv, check=False)
        else:
            out = self.run("new-session", *common, "-s", session, "-x", "200", "-y", "50", "--", *argv,
                           check=False)  # fmt: skip
            if out.returncode != 0 and "duplicate session" in out.stderr:  # someone made it meanwhile
                out = self.run("new-window", *common, "-t", f"={session}:", "--", *argv, check=False)
        if out.returncode != 0:
            raise CcmError(f"tmux could not open a window: {out.stderr.strip() or out.returncode}")
        window_id, pane_id, pid = ([*out.stdout.strip().split("\t"), "", "", ""])[:3]
        return Window(window_id, pane_id, int(pid) if pid.isdigit() else None, name)

    def windows(self, session: str = SESSION) -> list[Window]:
        """Every pane of ``session`` (one per window, as ccm makes them)."""
        fmt = "#{window_id}\t#{pane_id}\t#{pane_pid}\t#{pane_dead}\t#{window_name}"
        out = self.run("list-panes", "-s", "-t", f"={session}", "-F", fmt, check=False)
        if out.returncode != 0:
            return []
        found = []
        for line in out.stdout.splitlines():
            wid, pid_, ppid, dead, name = (line.split("\t", 4) + [""] * 5)[:5]
            found.append(Window(wid, pid_, int(ppid) if ppid.isdigit() else None, name, dead == "1"))
        return found

    def pane(self, pane_id: str) -> Window | None:
        fmt = "#{window_id}\t#{pane_id}\t#{pane_pid}\t#{pane_dead}\t#{window_name}"
        out = self.run("display-message", "-p", "-t", pane_id, fmt, check=False)
        if out.returncode != 0 or not out.stdout.strip():
            return None
        wid, pid_, ppid, dead, name = (out.stdout.rstrip("\n").split("\t", 4) + [""] * 5)[:5]
        if pid_ != pane_id:
            return None
        return Window(wid, pid_, int(ppid) if ppid.isdigit() else None, name, dead == "1")

    def capture(self, pane_id: str) -> str | None:
        out = self.run("capture-pane", "-p", "-t", pane_id, check=False)
        return out.stdout if out.returncode == 0 else None

    def send_key(self, pane_id: str, key: str) -> bool:
        return self.run("send-keys", "-t", pane_id, key, check=False).returncode == 0

    def kill_window(self, window_id: str) -> bool:
        return self.run("kill-window", "-t", window_id, check=False).returncode == 0

    def select(self, window_id: str) -> None:
        self.run("select-window", "-t", window_id, check=False)


def process_args(pid: int) -> str:
    """The command line of ``pid`` ('' if it is gone): how a restarted ccm-agentd recognises its agents."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    except OSError:
        pass
    try:  # macOS: no /proc
        out = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True,
                             timeout=5, stdin=subprocess.DEVNULL)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()
