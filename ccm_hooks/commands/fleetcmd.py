"""The ``--fleet`` readers and writers of ``ccm-hooks``: ``status --fleet``, ``top --fleet``, ``task list
--fleet``, ``task add --fleet``, ``task cancel --fleet``. They read every system's rows from the fleet
database (ccm_hooks/statedir/fleetdb.py); the local commands never import this module."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

from ccm_hooks import paths
from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import fleetdb
from ccm_hooks.statedir.timefmt import format_age, parse_ts

REDRAW_S = 2.0
# (title, width) of each column but the last, which takes what is left.
SESSION_COLUMNS = (("SYSTEM", 12), ("SESSION", 8), ("STATE", 12), ("AGE", 4), ("PROJECT", 14))
TASK_COLUMNS = (("TASK", 12), ("STATE", 16), ("SYSTEM", 12), ("TRY", 3), ("PROJECT", 14), ("AGE", 4))


def _dump(obj: Any) -> None:
    json.dump(obj, sys.stdout, ensure_ascii=False, indent=2, default=str)
    sys.stdout.write("\n")


def clean(value: object) -> str:
    """One line of printable text: a remote machine's text is as untrusted as a local one."""
    flat = " ".join(str(value or "").split())
    return "".join(ch if ch.isprintable() else "?" for ch in flat)


def fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def row(cells: list[str], columns: tuple[tuple[str, int], ...], width: int | None) -> str:
    fixed = "".join(fit(c, w).ljust(w) + " " for c, (_, w) in zip(cells, columns, strict=False))
    line = (fixed + cells[-1]).rstrip()
    return line if width is None else fit(line, width)


def _action(st: dict[str, Any]) -> str:
    state = st.get("state")
    if state in ("waiting", "error", "ended") or (state == "idle" and st.get("reason")):
        return clean(st.get("reason"))
    if state == "idle":
        return "» " + clean(st.get("last_assistant_message"))
    return clean(st.get("current_action"))


def session_lines(statuses: list[dict[str, Any]], now: float, width: int | None) -> list[str]:
    lines = [row([c for c, _ in SESSION_COLUMNS] + ["ACTION"], SESSION_COLUMNS, width)]
    for st in statuses:
        updated = parse_ts(st.get("updated_at"))
        project = os.path.basename(str(st.get("project") or st.get("cwd") or "").rstrip("/")) or "-"
        cells = [clean(st.get("system")), clean(st.get("session_id"))[:8], clean(st.get("state")),
                 format_age(now - updated) if updated else "?", clean(project), _action(st)]  # fmt: skip
        lines.append(row(cells, SESSION_COLUMNS, width))
    return lines


def task_lines(tasks: list[dict[str, Any]], now: float, width: int | None) -> list[str]:
    lines = [row([c for c, _ in TASK_COLUMNS] + ["WHAT"], TASK_COLUMNS, width)]
    for t in tasks:
        since = t.get("finished_at") or t.get("created_at")
        state = str(t["state"])
        if t.get("session_state") and state == "running":
            state = f"running:{t['session_state']}"
        why = t.get("reason") if state in ("failed", "cancelled") else None
        cells = [str(t["id"]), clean(state), clean(t.get("claimed_by") or "-"), str(t["attempt"]),
                 clean(t["project"]), format_age(now - since.timestamp()) if since is not None else "?",
                 clean(why or t.get("name") or t.get("prompt"))]  # fmt: skip
        lines.append(row(cells, TASK_COLUMNS, width))
    return lines


def status_cmd(as_json: bool, watch: bool) -> int:
    root = paths.state_dir()
    _, conn = fleetdb.open_fleet(root, "ccm-hooks status --fleet")
    clear = "\x1b[H\x1b[2J" if watch and sys.stdout.isatty() and not as_json else ""
    with conn:
        while True:
            statuses = fleetdb.sessions(conn)
            sys.stdout.write(clear)
            if as_json:
                _dump(statuses)
            elif not statuses:
                print("no sessions in the fleet database yet (is ccm-agentd running with [fleet]?)")
            else:
                width = os.get_terminal_size().columns if sys.stdout.isatty() else None
                print("\n".join(session_lines(statuses, time.time(), width)))
            sys.stdout.flush()
            if not watch:
                return 0
            time.sleep(REDRAW_S)


def snapshot(conn: Any, now: float, width: int | None) -> str:
    systems = fleetdb.systems(conn)
    columns = (("SYSTEM", 12), ("SEEN", 4), ("AGENTS", 6), ("BACKLOG", 10))
    out = [row(["SYSTEM", "SEEN", "AGENTS", "BACKLOG", "PROJECTS"], columns, width)]
    for s in systems:
        health = s.get("health") or {}
        agents = (
            f"{s.get('agents') or 0}/{s['max_agents']}" if s.get("max_agents") else str(s.get("agents") or 0)
        )
        backlog = f"{health.get('backlog_bytes') or 0} B"
        projects = clean(", ".join(s.get("projects") or []))
        cells = [clean(s["system"]), format_age(s["heartbeat_age_s"]), agents, backlog, projects]
        out.append(row(cells, columns, width))
    out.append("")
    out += session_lines([st for st in fleetdb.sessions(conn, 200) if st.get("state") != "ended"], now, width)
    tasks = fleetdb.tasks(conn, limit=50)
    if tasks:
        out.append("")
        out += task_lines(tasks, now, width)
    return "\n".join(out) + "\n"


def top_cmd(iterations: int | None, delay: float | None = None) -> int:
    """Every system, its live sessions and the queue, read again every ``delay`` s (2); plain snapshots when
    not a terminal or with -n (one per change)."""
    if iterations is not None and iterations < 1:
        raise CcmError("-n/--iterations must be at least 1")
    every = REDRAW_S if delay is None else delay
    if not 0.1 <= every <= 3600:
        raise CcmError("-d/--delay must be from 0.1 to 3600 seconds")
    root = paths.state_dir()
    _, conn = fleetdb.open_fleet(root, "ccm-hooks top --fleet")
    with conn:
        if iterations is not None or not (sys.stdout.isatty() and sys.stdin.isatty()):
            shown, last = 0, ""
            while True:
                text = snapshot(conn, time.time(), None)
                if text != last:
                    sys.stdout.write(("\n" if shown else "") + text)
                    sys.stdout.flush()
                    shown, last = shown + 1, text
                    if iterations is not None and shown >= iterations:
                        return 0
                time.sleep(every)
        return _interactive(conn, every)


def _interactive(conn: Any, every: float) -> int:
    import curses

    def run(stdscr: curses.window) -> int:
        curses.curs_set(0)
        stdscr.timeout(int(every * 1000))
        while True:
            height, width = stdscr.getmaxyx()
            stdscr.erase()
            lines = ["ccm top --fleet  q quit", *snapshot(conn, time.time(), width).splitlines()]
            for y, line in enumerate(lines[:height]):
                try:
                    stdscr.addstr(y, 0, fit(line, width - 1), curses.A_BOLD if y == 0 else 0)
                except curses.error:
                    pass
            stdscr.refresh()
            if stdscr.getch() in (ord("q"), ord("Q"), 27):
                return 0

    return curses.wrapper(run)


# --- tasks ------------------------------------------------------------------------------------------------


def task_list_cmd(state: str | None, as_json: bool) -> int:
    _, conn = fleetdb.open_fleet(paths.state_dir(), "ccm-hooks task list --fleet")
    with conn:
        tasks = fleetdb.tasks(conn, state)
    if as_json:
        _dump(tasks)
    elif not tasks:
        print("no fleet tasks" + (f" in state {state}" if state else ""))
    else:
        width = os.get_terminal_size().columns if sys.stdout.isatty() else None
        print("\n".join(task_lines(tasks, time.time(), width)))
    return 0


# What `task add --fleet` carries to the local task of whichever machine claims it (fleet.md#the-queue).
FLEET_OPTIONS = (
    "base", "in_place", "max_turns", "done_marker", "retries", "timeout", "model", "permission_mode",
    "headless",
)  # fmt: skip


def task_add_cmd(prompt: str, project_dir: str | None, on_system: str | None, labels: list[str],
                 after: list[str], options: Mapping[str, Any]) -> int:  # fmt: skip
    """Queue a fleet task for the project ``[fleet.projects]`` maps ``--project DIR`` (default .) to;
    ``--label K=V`` are labels a machine must have to claim it, ``--on`` the one system that may."""
    if prompt == "-":
        raise CcmError(
            "`task add -` reads local tasks; for the fleet, INSERT rows or run task add --fleet per task"
        )
    if after:
        raise CcmError("--after is for local tasks: a fleet task may run on another machine")
    if not prompt.strip():
        raise CcmError("the prompt is empty; say what the agent should do")
    wanted: dict[str, str] = {}
    for text in labels:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise CcmError(f"--label {text!r} must be KEY=VALUE")
        wanted[key.strip()] = value
    s, conn = fleetdb.open_fleet(paths.state_dir(), "ccm-hooks task add --fleet")
    directory = os.path.abspath(project_dir or ".")
    project = s.project_of(directory)
    if project is None:
        conn.close()
        raise CcmError(
            f"{directory} is not a project of the fleet here: map it in [fleet.projects] of config.toml "
            '(NAME = "/path/to/clone") on each machine that may run it'
        )
    carried = {k: options[k] for k in FLEET_OPTIONS if options.get(k) is not None}
    with conn:
        task_id = fleetdb.add_task(conn, prompt, project, name=options.get("name"),
                                   priority=int(options.get("priority") or 0), on_system=on_system,
                                   labels=wanted, options=carried)  # fmt: skip
    print(task_id)
    return 0


def task_cancel_cmd(task_id: str) -> int:
    _, conn = fleetdb.open_fleet(paths.state_dir(), "ccm-hooks task cancel --fleet")
    with conn:
        state = fleetdb.cancel_task(conn, task_id)
    if state == "cancelled":
        print(f"fleet task {task_id} cancelled")
    elif state in fleetdb.ACTIVE:
        print(f"fleet task {task_id} is {state}: its machine is asked to stop it")
    else:
        print(f"fleet task {task_id} already ended ({state})")
    return 0
