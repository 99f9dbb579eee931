"""`ccm-hooks top`: the curses view driven through a real tmux pane, and the plain snapshots for pipes.

Sessions are made by running the real hook handler with captured payloads; key presses go through the real
``watch`` machinery and are checked in the event logs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ccm_hooks.commands import top
from tests.claude_harness import Pane, TmuxServer, capture, send_keys, wait_for, wait_for_screen
from tests.hookrun import payload, read_log, run_hook

CLI = str(Path(sys.executable).parent / "ccm-hooks")
A = "aaaaaaaa-0000-4000-8000-000000000001"
B = "bbbbbbbb-0000-4000-8000-000000000002"
C = "cccccccc-0000-4000-8000-000000000003"
LONG_COMMAND = "make test " + " ".join(f"TARGET_{i}=1" for i in range(12))  # > 80 columns on its own


def hook(name: str, sid: str, project: str, **changes: Any) -> None:
    done = run_hook(payload(name, session_id=sid, **changes), env={"CLAUDE_PROJECT_DIR": project})
    assert done.returncode == 0, done.stderr


def idle_session(sid: str, project: str) -> None:
    """One finished turn that used Bash: idle, 1 turn."""
    for name in ("SessionStart__startup_interactive", "UserPromptSubmit__p", "PreToolUse__Bash"):
        hook(name, sid, project)
    hook("PostToolUse__Bash", sid, project)
    hook("Stop__first", sid, project)


def working_session(sid: str, project: str, command: str = "echo hello > out.txt") -> None:
    """A turn running a Bash command: working, 0 turns."""
    hook("SessionStart__startup_interactive", sid, project)
    hook("UserPromptSubmit__p", sid, project)
    hook("PreToolUse__Bash", sid, project, tool_input={"command": command, "description": "run"})


def top_records(home: Path, sid: str, event: str) -> list[dict[str, Any]]:
    return [r for r in read_log(home, sid) if r["event"] == event and r.get("by") == "ccm-hooks top"]


def watch_flags(home: Path, sid: str) -> list[bool]:
    """The `enabled` of every ccm.watch record `top` wrote for ``sid``, oldest first."""
    return [r["watch"]["enabled"] for r in top_records(home, sid, "ccm.watch")]


# --- plain snapshots ---------------------------------------------------------------------------------


def test_plain_snapshot_has_a_header_and_one_whole_line_per_session(ccm_home: Path) -> None:
    idle_session(A, "/src/alpha")
    working_session(B, "/src/beta-with-a-long-name", LONG_COMMAND)
    out = subprocess.run([CLI, "top", "-n", "1"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout
    header, first, second = out.stdout.splitlines()
    assert header.split() == ["SESSION", "STATE", "AGE", "TURNS", "WATCH", "PROJECT", "ACTION"]
    fields = first.split()
    assert [fields[i] for i in (0, 1, 3, 4, 5)] == [B[:8], "working", "0", "off", "beta-with-a…"]
    assert first.endswith(f"Bash: {LONG_COMMAND}")  # into a pipe, the action is never cut
    fields = second.split()
    assert [fields[i] for i in (0, 1, 3, 4, 5)] == [A[:8], "idle", "1", "off", "alpha"]
    assert second.endswith("last: Bash")
    # Columns line up: every row has its fields where the header has them.
    assert first.index("working") == second.index("idle") == header.index("STATE")


def test_plain_without_sessions_says_so(ccm_home: Path) -> None:
    out = subprocess.run([CLI, "top", "-n", "1"], capture_output=True, text=True, timeout=30)
    assert (out.returncode, out.stdout) == (0, f"no sessions recorded in {ccm_home} yet\n")


def test_plain_iterations_must_be_positive(ccm_home: Path) -> None:
    out = subprocess.run([CLI, "top", "-n", "0"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "at least 1" in out.stderr


def test_plain_prints_a_new_snapshot_after_each_change(ccm_home: Path) -> None:
    idle_session(A, "/src/alpha")
    proc = subprocess.Popen(
        [CLI, "top"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout or ():
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        wait_for(lambda: any(line.startswith(A[:8]) for line in lines), 15, what="the first snapshot")
        shown = time.monotonic()
        assert [line[:8] for line in lines] == ["SESSION ", A[:8]]
        hook("SessionStart__startup_interactive", C, "/src/gamma")

        def second() -> list[str]:
            """The second table, once whole (a blank line separates snapshots)."""
            parts = "".join(lines).split("\n\n")
            return parts[1].splitlines() if len(parts) > 1 and len(parts[1].splitlines()) == 3 else []

        # Before the periodic rescan could have run: the snapshot came from the file-change watcher.
        left = shown + top.RESCAN_S - 0.5 - time.monotonic()
        table = wait_for(second, max(left, 0.1), what="a second snapshot, prompted by the change")
        assert table[0].startswith("SESSION") and {row[:8] for row in table[1:]} == {A[:8], C[:8]}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_rows_fit_any_width_even_with_wide_characters() -> None:
    st = {
        "session_id": A,
        "state": "waiting",
        "reason": "permission: Bash: " + "日本語のコマンド" * 10,
        "project": "/src/プロジェクト名前",
        "updated_at": "2026-01-01T00:00:00Z",
        "counters": {"turns": 3},
        "watch": {"enabled": True, "max_turns": 10, "continues": 3},
    }
    for width in (80, 61, 40, 10, 1):
        row = top.format_row(top.row_values(st, time.time()), width)
        assert sum(map(top._cells, row)) <= width and row.endswith("…")
    assert "on 7 left" in top.format_row(top.row_values(st, time.time()), 80)
    assert top.action({**st, "state": "working", "current_action": "Bash: a\nb\x1b[31m"}) == "Bash: a b^[[31m"


# --- the interactive view, in a real 80x24 tmux pane -----------------------------------------------------


def start_top(server: TmuxServer, home: Path) -> Pane:
    """``ccm-hooks top`` in a new 80x24 tmux session. Its exit status is echoed by a shell, not read from
    tmux: tmux 3.3 can mark the pane dead well before it reaps the process and learns the status."""
    env = {
        "HOME": os.environ["HOME"],
        "CCM_HOME": str(home),
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    env_args = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    out = server.run(
        "new-session", "-d", "-P", "-F", "#{pane_id}", "-x", "80", "-y", "24", *env_args,
        "sh", "-c", f"'{CLI}' top; echo TOP-EXITED $?",
    )  # fmt: skip
    return Pane(server, out.stdout.strip())


def rows(screen: str) -> list[str]:
    """Session ids (8 characters) in screen order."""
    return [
        line[:8] for line in screen.splitlines() if line[:8] in (A[:8], B[:8], C[:8]) and line[8:9] == " "
    ]


def row_of(screen: str, sid: str) -> str:
    return next((line for line in screen.splitlines() if line.startswith(sid[:8] + " ")), "")


def selected(pane: Pane) -> str | None:
    """The id of the highlighted (reverse video, SGR 7) row."""
    screen = pane.server.run("capture-pane", "-p", "-e", "-t", pane.pane_id).stdout
    for line in screen.splitlines():
        if "\x1b[7m" in line:
            return line.split("\x1b[7m", 1)[1][:8]
    return None


def select(pane: Pane, sid: str) -> None:
    """Move the highlight to ``sid`` with the arrow keys, checking each step on screen."""
    order = rows(capture(pane))
    now = selected(pane)
    assert now is not None
    key = "Down" if order.index(sid[:8]) > order.index(now) else "Up"
    for _ in range(abs(order.index(sid[:8]) - order.index(now))):
        send_keys(pane, key)
    wait_for(lambda: selected(pane) == sid[:8], 10, what=f"{sid[:8]} selected", diagnostics=pane.describe)


@pytest.mark.tmux
def test_interactive_view_toggles_watch_and_follows_changes(tmux_server: TmuxServer, ccm_home: Path) -> None:
    pane = start_top(tmux_server, ccm_home)
    wait_for_screen(pane, lambda s: "no sessions yet" in s, 15, what="the empty view")
    send_keys(pane, "w")
    wait_for_screen(pane, lambda s: "no session selected" in s, 10, what="w refused without sessions")

    # Sessions made while top runs show up: the status dir is watched.
    idle_session(A, "/src/alpha")
    working_session(B, "/src/beta", LONG_COMMAND)
    # B passes through `processing` on its way to `working`: wait for the last of its three events.
    screen = wait_for_screen(
        pane, lambda s: len(rows(s)) == 2 and row_of(s, B).split()[1:2] == ["working"], 15
    )
    assert "ccm top: 2 sessions" in screen
    assert rows(screen) == [B[:8], A[:8]]  # newest first
    assert max(len(line) for line in screen.splitlines()) <= 80
    assert row_of(screen, B).endswith("…")
    assert selected(pane) == A[:8]  # the selection stayed on the session it was on

    # k moves up to B; w turns its watch on, then off again, recorded in that session's log.
    send_keys(pane, "k")
    wait_for(lambda: selected(pane) == B[:8], 10, what="B selected", diagnostics=pane.describe)
    send_keys(pane, "w")
    wait_for(lambda: watch_flags(ccm_home, B) == [True], 10, what="ccm.watch enabled for B")
    wait_for_screen(pane, lambda s: "on 10 left" in row_of(s, B) and "watch on for bbbbbbbb" in s, 10)
    send_keys(pane, "w")
    wait_for(lambda: watch_flags(ccm_home, B) == [True, False], 10, what="ccm.watch disabled for B")
    wait_for_screen(pane, lambda s: " off " in row_of(s, B) and "watch off for bbbbbbbb" in s, 10)

    # j moves back to A; w and r act on it, not on B.
    send_keys(pane, "j")
    wait_for(lambda: selected(pane) == A[:8], 10, what="A selected", diagnostics=pane.describe)
    send_keys(pane, "w")
    wait_for(lambda: watch_flags(ccm_home, A) == [True], 10, what="ccm.watch enabled for A")
    wait_for_screen(pane, lambda s: "on 10 left" in row_of(s, A), 10)
    send_keys(pane, "r")
    wait_for(lambda: len(top_records(ccm_home, A, "ccm.watch_reset")) == 1, 10, what="ccm.watch_reset for A")
    wait_for_screen(pane, lambda s: "counter reset for aaaaaaaa (on 10 left)" in s, 10)
    assert watch_flags(ccm_home, B) == [True, False] and top_records(ccm_home, B, "ccm.watch_reset") == []

    # The selection stays on the same session when a new one arrives above it.
    working_session(C, "/src/gamma")
    screen = wait_for_screen(pane, lambda s: "ccm top: 3 sessions" in s and len(rows(s)) == 3, 15)
    assert rows(screen)[0] == C[:8] and selected(pane) == A[:8]
    select(pane, B)
    send_keys(pane, "r")
    wait_for(lambda: len(top_records(ccm_home, B, "ccm.watch_reset")) == 1, 10, what="ccm.watch_reset for B")

    # A tiny window: everything cut to fit, nothing crashes; q still quits with status 0.
    pane.server.run("resize-window", "-t", pane.pane_id, "-x", "30", "-y", "4")
    wait_for_screen(pane, lambda s: s.splitlines()[0].startswith("ccm top: 3 sessions") and "…" in s, 10)
    assert max(len(line) for line in capture(pane).splitlines()) <= 30
    send_keys(pane, "q")
    wait_for(
        lambda: "TOP-EXITED 0" in capture(pane, history=True),
        10,
        what="top to exit with 0",
        diagnostics=lambda: pane.describe() + repr(capture(pane, history=True)),
    )


# --- plain mode: -n snapshots at an interval, ended sessions hidden ----------------------------------------


def test_plain_n_snapshots_come_at_the_interval_even_without_changes(ccm_home: Path) -> None:
    idle_session(A, "/src/alpha")
    started = time.monotonic()
    out = subprocess.run(
        f"'{CLI}' top -n 3 -d 0.3 | cat", shell=True, capture_output=True, text=True, timeout=30
    )
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("SESSION") == 3 and took < 10
    bad = subprocess.run([CLI, "top", "-n", "1", "-d", "0"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "-d/--delay" in bad.stderr


def test_plain_hides_ended_sessions_unless_all(ccm_home: Path) -> None:
    idle_session(A, "/src/alpha")
    idle_session(B, "/src/beta")
    hook("SessionEnd__prompt_input_exit", B, "/src/beta")
    out = subprocess.run([CLI, "top", "-n", "1"], capture_output=True, text=True, timeout=30).stdout
    assert A[:8] in out and B[:8] not in out and "(1 ended hidden: --all shows them)" in out
    out = subprocess.run([CLI, "top", "-n", "1", "--all"], capture_output=True, text=True, timeout=30).stdout
    assert A[:8] in out and B[:8] in out and "hidden" not in out


def test_a_reset_run_no_longer_shows_why_it_stopped() -> None:
    """After `r` (watch reset) the state machine keeps the idle state's reason; the view must not."""
    st = {
        "session_id": A, "state": "idle", "reason": "watch stopped: no tool call in 2 turns",
        "last_tool": "Bash", "updated_at": "2026-01-01T00:00:00Z",
        "watch": {"enabled": True, "max_turns": 10, "continues": 3, "stopped": "no_progress",
                  "handoff": None},
    }  # fmt: skip
    assert top.action(st) == "watch stopped: no tool call in 2 turns"
    reset = {**st, "watch": {**st["watch"], "stopped": None, "continues": 0}}
    assert top.action(reset) == "last: Bash"


# --- interactive: ? keys, a toggles ended sessions, Enter goes to the pane ----------------------------------


@pytest.mark.tmux
def test_help_key_and_ended_sessions_toggle(tmux_server: TmuxServer, ccm_home: Path) -> None:
    idle_session(A, "/src/alpha")
    idle_session(B, "/src/beta")
    hook("SessionEnd__prompt_input_exit", B, "/src/beta")
    pane = start_top(tmux_server, ccm_home)
    screen = wait_for_screen(pane, lambda s: A[:8] in s, 15, what="the view")
    assert B[:8] not in screen and "(+1 ended: a)" in screen
    send_keys(pane, "?")
    wait_for_screen(pane, lambda s: "ccm top: keys" in s and "go to its tmux pane" in s, 10)
    send_keys(pane, "x")  # any key closes the help
    wait_for_screen(pane, lambda s: "ccm top: 1 session" in s, 10)
    send_keys(pane, "a")
    screen = wait_for_screen(pane, lambda s: B[:8] in s and "showing ended sessions" in s, 10)
    assert "ccm top: 2 sessions" in screen
    send_keys(pane, "Enter")  # the selected session was not started in tmux
    wait_for_screen(pane, lambda s: "does not run in tmux" in s, 10)
    send_keys(pane, "q")
    wait_for(lambda: "TOP-EXITED 0" in capture(pane, history=True), 10, what="top to exit")


def tmux_session(server: TmuxServer, name: str, *command: str) -> str:
    """A detached session running ``command``; its pane id."""
    out = server.run(
        "new-session", "-d", "-P", "-F", "#{pane_id}", "-s", name, "-x", "80", "-y", "24", *command
    )
    return out.stdout.strip()


def session_in_pane(server: TmuxServer, pane_id: str) -> None:
    """A session whose claude runs in ``pane_id`` of ``server``, as its hooks would record it."""
    env = {"TMUX": f"{server.socket_path},1,0", "TMUX_PANE": pane_id, "CLAUDE_PROJECT_DIR": "/src/alpha"}
    for name in ("SessionStart__startup_interactive", "UserPromptSubmit__p"):
        assert run_hook(payload(name, session_id=A), env=env).returncode == 0


def client_sessions(server: TmuxServer) -> list[str]:
    return server.run("list-clients", "-F", "#{client_session}", check=False).stdout.split()


@pytest.fixture
def outer(tmux_bin: str, tmp_path: Path) -> Any:
    """A second tmux server: the terminal a person looks at (its panes are the test's terminals)."""
    import secrets

    conf = tmp_path / "outer.conf"
    conf.write_text("set -g status off\nset -g remain-on-exit on\n")
    env = {"HOME": os.environ["HOME"], "SHELL": "/bin/sh", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "LANG": "C.UTF-8", "TERM": "xterm-256color"}  # fmt: skip
    server = TmuxServer(tmux_bin, f"ccm-outer-{secrets.token_hex(6)}", conf, env)
    yield server
    server.kill()


@pytest.mark.tmux
def test_enter_inside_tmux_switches_the_client_to_the_pane(
    tmux_server: TmuxServer, outer: TmuxServer, ccm_home: Path
) -> None:
    work = tmux_session(tmux_server, "work", "sleep", "600")
    session_in_pane(tmux_server, work)
    pane = start_top(tmux_server, ccm_home)  # top runs inside tmux: TMUX is set in its pane
    top_session = tmux_server.run(
        "display-message", "-p", "-t", pane.pane_id, "#{session_name}"
    ).stdout.strip()
    # A person's terminal attached to top's session (a client of the inner server, in an outer pane).
    attach = f"unset TMUX; exec {tmux_server.tmux_bin} -L {tmux_server.socket_name} attach -t {top_session}"
    tmux_session(outer, "person", "sh", "-c", attach)
    wait_for(lambda: client_sessions(tmux_server) == [top_session], 15, what="the client attached to top")
    wait_for_screen(pane, lambda s: A[:8] in s, 15, what="the session row")
    send_keys(pane, "Enter")
    wait_for(lambda: client_sessions(tmux_server) == ["work"], 10, what="the client switched to the pane")
    active = tmux_server.run("display-message", "-p", "-t", "work", "#{pane_id}").stdout.strip()
    assert active == work
    wait_for_screen(pane, lambda s: f"switched to {work}" in s, 10)


@pytest.mark.tmux
def test_enter_outside_tmux_attaches_and_comes_back_on_detach(
    tmux_server: TmuxServer, outer: TmuxServer, ccm_home: Path
) -> None:
    work = tmux_session(tmux_server, "work", "sh", "-c", "echo INSIDE-THE-SESSION; exec sleep 600")
    session_in_pane(tmux_server, work)
    # top in a terminal that is not inside tmux (the outer pane, with TMUX unset).
    env_args = ["-e", f"CCM_HOME={ccm_home}", "-e", f"HOME={os.environ['HOME']}"]
    terminal = outer.run(
        "new-session", "-d", "-P", "-F", "#{pane_id}", "-x", "80", "-y", "24", *env_args,
        "sh", "-c", f"unset TMUX; '{CLI}' top; echo TOP-EXITED $?",
    ).stdout.strip()  # fmt: skip
    pane = Pane(outer, terminal)
    wait_for_screen(pane, lambda s: A[:8] in s, 15, what="the session row")
    send_keys(pane, "Enter")
    wait_for(lambda: client_sessions(tmux_server) == ["work"], 10, what="attached to the session's server")
    wait_for_screen(pane, lambda s: "INSIDE-THE-SESSION" in s, 10, what="the session on screen")
    tmux_server.run("detach-client", "-s", "work")
    wait_for_screen(pane, lambda s: "back from tmux" in s and A[:8] in s, 10, what="top back after detach")
    send_keys(pane, "q")
    wait_for(lambda: "TOP-EXITED 0" in capture(pane, history=True), 10, what="top to exit")


# --- cost follows what changed ---------------------------------------------------------------------------


def test_the_cache_rereads_only_changed_status_files(ccm_home: Path) -> None:
    from ccm_hooks.statedir.fswatch import DirWatcher
    from ccm_hooks.statedir.statuscache import StatusCache

    for i in range(30):
        hook("SessionStart__startup_p", f"s{i:03d}-0000", "/src/many")
    with DirWatcher([str(ccm_home / "status")]) as watcher:
        cache = StatusCache(str(ccm_home))
        cache.rescan()
        assert cache.reads == 30 and len(cache.statuses()) == 30
        assert not cache.rescan() and cache.reads == 30  # stat only: nothing differs, nothing read
        hook("UserPromptSubmit__p", "s007-0000", "/src/many")
        wait_for(lambda: watcher.wait(0.2) or None, 10, what="the watcher to see the change")
        assert cache.apply(watcher.take())
        assert cache.reads == 31  # just the one file
        assert cache.statuses()[0]["session_id"] == "s007-0000"
        (ccm_home / "status" / "s001-0000.json").unlink()
        assert cache.rescan() and len(cache.statuses()) == 29
