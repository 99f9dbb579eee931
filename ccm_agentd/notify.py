"""Notifications: run configured commands (or a desktop notifier) on transitions people care about.

The daemon is single-threaded and event driven, so nothing here blocks: children are started with
``Popen`` and ``reap()`` polls them from the event loop. Facts reach a command only through environment
variables (``CCM_*``), never through the command string, so a prompt or tool input quoted in ``reason``
cannot inject shell code.

Each transition (session, kind, ``state_since``) is notified at most once, across daemon restarts. One
transition per session is remembered (the last one notified: a session's transitions only move forward), in
``<root>/agentd/notified.jsonl``, one line ``{"s": session, "k": kind, "t": since}`` appended per
notification and compacted to one line per session when it has grown to twice that. Memory and disk grow
with the number of sessions, never with time, and nothing is forgotten while its session exists.
Notifier output goes to ``<root>/log/notify.log``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ccm_hooks.fileio import append_line, atomic_write
from ccm_hooks.paths import FILE_MODE, ensure_dir, log_dir

log = logging.getLogger("ccm_agentd.notify")

KINDS = ("needs_human", "finished", "error", "stalled", "rate_limited")
COMPACT_SLACK = 1024  # compact notified.jsonl past 2 lines per session plus this many
MAX_CHILDREN = 8
MAX_LOG_BYTES = 1 << 20  # notify.log is rotated to notify.log.1 past this, as hooks.log is

ENV_NAMES = ("CCM_NOTIFY_KIND", "CCM_SESSION_ID", "CCM_STATE", "CCM_SINCE", "CCM_PROJECT", "CCM_REASON",
             "CCM_TMUX_PANE", "CCM_TMUX_SOCKET", "CCM_SUMMARY")  # fmt: skip
# A graphical session is likely when one of these is set; a headless server has notify-send installed as
# often as not (it comes with libnotify-bin), and without a session bus it fails after a D-Bus timeout.
DISPLAY_VARS = ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS")
# AppleScript receives title and body as arguments of its run handler: no string literal to escape.
OSASCRIPT = ("-e", "on run argv", "-e", "display notification (item 2 of argv) with title (item 1 of argv)",
             "-e", "end run")  # fmt: skip


@dataclass(frozen=True)
class Notification:
    kind: str  # one of KINDS
    session_id: str
    state: str
    since: str  # status["state_since"]: with kind and session_id it identifies the transition
    project: str | None
    reason: str | None
    tmux_pane: str | None
    tmux_socket: str | None
    summary: str  # one line for people

    @property
    def key(self) -> str:
        return f"{self.session_id}:{self.kind}:{self.since}"

    @property
    def transition(self) -> tuple[str, str]:
        return self.kind, self.since

    def env(self) -> dict[str, str]:
        values = (self.kind, self.session_id, self.state, self.since, self.project, self.reason,
                  self.tmux_pane, self.tmux_socket, self.summary)  # fmt: skip
        return {name: _env_value(value) for name, value in zip(ENV_NAMES, values, strict=True)}


def _env_value(value: str | None) -> str:
    """An environment-safe string: NUL cannot be in an environment, lone surrogates cannot be encoded."""
    if not value:
        return ""
    return value.replace("\0", "\ufffd").encode("utf-8", "backslashreplace").decode("utf-8")


def desktop_argv(n: Notification, platform: str, environ: Mapping[str, str]) -> list[str] | None:
    """The desktop notifier's argv for ``n`` on ``platform``, or None if there is no sensible one."""
    title = "ccm" if not n.project else f"ccm: {os.path.basename(n.project.rstrip('/')) or n.project}"
    body = _env_value(n.summary).replace("\n", " ")
    path = environ.get("PATH", os.defpath)
    if platform == "darwin":
        osascript = shutil.which("osascript", path=path)
        return [osascript, *OSASCRIPT, _env_value(title), body] if osascript else None
    if platform.startswith(("win", "cygwin")) or not any(environ.get(var) for var in DISPLAY_VARS):
        return None
    notify_send = shutil.which("notify-send", path=path)
    # "--": GOption would take a body starting with "-" for an option.
    return [notify_send, "--app-name=ccm", "--", _env_value(title), body] if notify_send else None


def desktop_available(platform: str, environ: Mapping[str, str]) -> bool:
    """Whether a desktop notifier can show anything here (see desktop_argv)."""
    probe = Notification("finished", "-", "idle", "-", None, None, None, None, "-")
    return desktop_argv(probe, platform, environ) is not None


@dataclass
class _Child:
    proc: subprocess.Popen[bytes]
    name: str  # argv[0], for log messages
    key: str
    started: float
    killed: bool = False


class Notifier:
    """Starts one child per configured command (or the desktop notifier) for each new transition."""

    def __init__(
        self,
        root: str,
        commands: Sequence[str] | None,
        desktop: bool = True,
        timeout: float = 10.0,
        environ: Mapping[str, str] | None = None,
        *,
        platform: str | None = None,
        max_children: int = MAX_CHILDREN,
    ) -> None:
        self.root = root
        self.commands: list[str] = []
        self.desktop = False
        self.timeout = timeout
        self.configure(commands, desktop, timeout)
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.platform = sys.platform if platform is None else platform
        self.max_children = max_children
        self.sent = 0  # children that exited 0
        self.failed = 0  # children that could not start, were dropped at the cap, timed out or exited != 0
        self.deduped = 0  # send() calls for a transition already notified
        self.children: list[_Child] = []
        self.path = os.path.join(root, "agentd", "notified.jsonl")
        self.log_path = os.path.join(log_dir(root), "notify.log")
        self._last, self._lines = self._load()

    def configure(self, commands: Sequence[str] | None, desktop: bool = True, timeout: float = 10.0) -> None:
        """Apply a reloaded config in place. Unlike close() and a new Notifier, this neither waits for
        running children (the loop must not block on SIGHUP) nor resets the counters (they feed metrics)."""
        self.commands = [c for c in (commands or ()) if c.strip()]
        self.desktop = desktop and not self.commands
        self.timeout = timeout

    @property
    def active(self) -> bool:
        """Whether a notification would reach anyone: a command, or a usable desktop notifier."""
        return bool(self.commands) or (self.desktop and desktop_available(self.platform, self.environ))

    def describe(self) -> str:
        """One line for `ccm-agentd status` and the log: where notifications go."""
        if self.commands:
            return f"{len(self.commands)} notify command(s)"
        if self.desktop and desktop_available(self.platform, self.environ):
            return "the desktop notifier"
        return "nothing: no notify_commands and no desktop notifier here (nothing is sent)"

    def _load(self) -> tuple[dict[str, tuple[str, str]], int]:
        last: dict[str, tuple[str, str]] = {}
        lines = 0
        try:
            with open(self.path, "rb") as fh:
                for raw in fh:
                    lines += 1
                    try:
                        entry = json.loads(raw)
                    except ValueError:
                        continue  # a torn or foreign line
                    if isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in "skt"):
                        last[entry["s"]] = (entry["k"], entry["t"])
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("notify: ignoring unreadable %s: %s", self.path, exc)
        return last, lines

    def last_kind(self, subject: str) -> str | None:
        """The kind of the last transition notified for this session (or task), if any."""
        last = self._last.get(subject)
        return last[0] if last else None

    def seen(self, n: Notification) -> bool:
        return self._last.get(n.session_id) == n.transition

    def _remember(self, n: Notification) -> None:
        self._last[n.session_id] = n.transition
        try:
            ensure_dir(os.path.dirname(self.path))
            if self._lines > 2 * len(self._last) + COMPACT_SLACK:
                self.compact()
                return
            line = {"s": n.session_id, "k": n.kind, "t": n.since}
            append_line(
                self.path, json.dumps(line, ensure_ascii=False).encode("utf-8", "backslashreplace") + b"\n"
            )
            self._lines += 1
        except OSError as exc:
            # The in-memory map still dedupes until a restart; a full disk must not stop notifications.
            log.warning("notify: cannot record %s in %s: %s", n.key, self.path, exc)

    def compact(self, keep: set[str] | None = None) -> None:
        """Rewrite notified.jsonl with one line per session (only those in ``keep``, when given)."""
        if keep is not None:
            self._last = {s: t for s, t in self._last.items() if s in keep}
        body = b"".join(
            json.dumps({"s": s, "k": k, "t": t}, ensure_ascii=False).encode("utf-8", "backslashreplace")
            + b"\n"
            for s, (k, t) in self._last.items()
        )
        atomic_write(self.path, body)
        self._lines = len(self._last)

    @property
    def running(self) -> int:
        return len(self.children)

    def send(self, n: Notification) -> bool:
        """Notify ``n`` unless its transition was notified before (False), or nothing is configured to
        notify with (False: nothing is recorded or logged as sent). True when notifiers were started."""
        if self.seen(n):
            self.deduped += 1
            return False
        if not self.active:
            return False
        # Recorded BEFORE starting anything: if the daemon dies after starting a notifier, the restart must
        # not notify again. At most once is the right trade-off: a lost notification costs a glance at
        # `ccm top`, a repeated one (or a storm after a crash loop) teaches people to ignore them.
        self._remember(n)
        self.reap()
        argvs: list[list[str]] = [["/bin/sh", "-c", c] for c in self.commands]
        if self.desktop:
            argv = desktop_argv(n, self.platform, self.environ)
            if argv:
                argvs.append(argv)
        extra = {"event": "notify", "kind": n.kind, "session_id": n.session_id, "state": n.state,
                 "since": n.since, "reason": n.reason, "notifiers": len(argvs)}  # fmt: skip
        log.info("notify %s %s: %s", n.kind, n.session_id, n.summary, extra=extra)
        if argvs:
            env = {**self.environ, **n.env()}
            for argv in argvs:
                self._start(argv, env, n.key)
        return True

    def _start(self, argv: list[str], env: dict[str, str], key: str) -> None:
        if len(self.children) >= self.max_children:
            # Notifiers that hang until their timeout must not pile up into a fork bomb.
            self.failed += 1
            log.warning(
                "notify: %d notifiers still running, dropped %s for %s", len(self.children), argv[0], key
            )
            return
        out = self._open_log()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                    start_new_session=True, close_fds=True)  # fmt: skip
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            self.failed += 1
            log.warning("notify: cannot start %s for %s: %s", argv[0], key, exc)
            return
        finally:
            if out != subprocess.DEVNULL:
                os.close(out)
        self.children.append(_Child(proc, argv[0], key, time.monotonic()))

    def _open_log(self) -> int:
        """An O_APPEND fd on notify.log (rotated past MAX_LOG_BYTES), or DEVNULL if it cannot be opened."""
        try:
            ensure_dir(log_dir(self.root))
            try:
                if os.stat(self.log_path).st_size > MAX_LOG_BYTES:
                    os.replace(self.log_path, self.log_path + ".1")
            except FileNotFoundError:
                pass
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            return os.open(self.log_path, flags, FILE_MODE)
        except OSError:
            return subprocess.DEVNULL

    def reap(self) -> None:
        """Collect children that finished and kill those past the timeout. Never blocks."""
        now = time.monotonic()
        keep: list[_Child] = []
        for child in self.children:
            code = child.proc.poll()
            if code is not None:
                if not child.killed:
                    self._finished(child, code)
            elif not child.killed and now - child.started > self.timeout:
                self._kill(child)
                self.failed += 1
                log.warning("notify: %s for %s timed out after %.1f s, killed", child.name,
                            child.key, self.timeout)  # fmt: skip
                keep.append(child)  # polled again until the kernel has reaped it: no zombies
            else:
                keep.append(child)
        self.children = keep

    def _finished(self, child: _Child, code: int) -> None:
        if code == 0:
            self.sent += 1
        else:
            self.failed += 1
            log.warning("notify: %s for %s exited %d (output in %s)", child.name, child.key, code,
                        self.log_path)  # fmt: skip

    @staticmethod
    def _kill(child: _Child) -> None:
        # The whole group (start_new_session made the child its leader): `sh -c` may have forked the
        # command, and the command may have forked too. The leader is not reaped yet, so its pid (the
        # group id) cannot have been reused.
        child.killed = True
        try:
            os.killpg(child.proc.pid, signal.SIGKILL)
        except OSError:  # already gone, or EPERM: a notifier failing must never take the daemon down
            pass

    def close(self, grace: float = 2.0) -> None:
        """Give running children ``grace`` seconds to finish, then kill the rest. For shutdown only."""
        deadline = time.monotonic() + grace
        while self.children and time.monotonic() < deadline:
            self.reap()
            if self.children:
                time.sleep(0.02)
        for child in self.children:
            if not child.killed:
                self._kill(child)
                self.failed += 1
            try:
                child.proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                log.warning("notify: pid %d survived SIGKILL", child.proc.pid)
        self.children = []
