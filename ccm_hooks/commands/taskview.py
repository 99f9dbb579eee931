"""``ccm-hooks task list`` and ``task show``: the queue and one task's result, for people and for jq."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from ccm_hooks import paths
from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import tasks, tasks_result
from ccm_hooks.statedir.timefmt import format_age, parse_ts


def _one_line(text: object, width: int) -> str:
    flat = " ".join(str(text or "").split())
    flat = "".join(ch if ch.isprintable() else "?" for ch in flat)
    return flat if len(flat) <= width else flat[: max(0, width - 1)] + "…"


def agent_state(root: str, task: dict[str, Any]) -> str:
    """The state of the current attempt's session (``working``, ``waiting``, ``rate_limited``...) or ``-``."""
    attempt = tasks.current_attempt(task)
    if attempt is None or task.get("state") not in tasks.LIVE:
        return "-"
    status = tasks_result.session_status(root, attempt.get("session_id"))
    return str(status.get("state")) if status else "-"


def why(task: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> str:
    """What to read next to the state: what it waits for, why it ended, or what it is about."""
    from ccm_hooks.statedir.tasks import FINAL

    if task.get("state") == "queued":
        for dep in task.get("after") or []:
            other = by_id.get(dep)
            if other is None or other.get("state") != "done":
                return f"after {dep} ({(other or {}).get('state', 'missing')})"
        if task.get("reason"):
            return str(task["reason"])
    if task.get("state") in FINAL or task.get("state") == "waiting":
        return str(task.get("reason") or "")
    return str(task.get("name") or task.get("prompt") or "")


def list_cmd(state: str | None, as_json: bool) -> int:
    root = paths.state_dir()
    if state is not None and state not in tasks.STATES:
        raise CcmError(f"--state {state!r} is not one of {', '.join(tasks.STATES)}")
    everything = tasks.load_all(root)
    by_id = {t["id"]: t for t in everything}
    shown = [t for t in everything if state is None or t.get("state") == state]
    shown.sort(key=lambda t: (t.get("state") in tasks.FINAL, tasks.order_key(t)))
    if as_json:
        json.dump(shown, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    if not shown:
        print("no tasks" + (f" {state}" if state else "") + f" in {tasks.tasks_dir(root)}")
        return 0
    now = time.time()
    print(f"{'ID':<9} {'STATE':<9} {'AGENT':<12} {'AGE':>4}  {'PROJECT':<14} WHAT")
    for t in shown:
        age = format_age(now - (parse_ts(t.get("state_since")) or now))
        project = os.path.basename(str(t.get("project") or "").rstrip("/"))
        print(f"{t['id']:<9} {t.get('state')!s:<9} {agent_state(root, t):<12} {age:>4}  "
              f"{_one_line(project, 14):<14} {_one_line(why(t, by_id), 80)}")  # fmt: skip
    return 0


def show_cmd(wanted: str, as_json: bool) -> int:
    root = paths.state_dir()
    task = tasks.load(root, tasks.resolve(root, wanted))
    if task is None:
        raise CcmError(f"task {wanted} has no readable file or log")
    live = None
    if task.get("state") in tasks.LIVE and task.get("attempts"):
        live = tasks_result.compute(root, task, str(task["state"]), task.get("reason"), time.time())
    if as_json:
        out = dict(task, live_result=live) if live is not None else task
        json.dump(out, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    sys.stdout.write(describe(root, task, live))
    return 0


def describe(root: str, task: dict[str, Any], live: dict[str, Any] | None) -> str:
    lines = [f"task {task['id']}" + (f": {task['name']}" if task.get("name") else "")]
    lines.append(f"  state     {task.get('state')} since {task.get('state_since')}"
                 + (f": {task['reason']}" if task.get("reason") else ""))  # fmt: skip
    lines.append(f"  project   {task.get('project')}")
    if task.get("branch"):
        lines.append(
            f"  branch    {task['branch']} from {str(task.get('base_commit'))[:12]} in {task.get('workdir')}"
        )
    elif task.get("in_place"):
        lines.append(f"  in place  {task.get('workdir')}")
    options = [f"max turns {task.get('max_turns')}", f"retries {task.get('retries')}"]
    for key, label in (("timeout_s", "timeout s"), ("model", "model"), ("permission_mode", "mode"),
                       ("priority", "priority")):  # fmt: skip
        if task.get(key):
            options.append(f"{label} {task[key]}")
    if task.get("headless"):
        options.append("headless")
    if task.get("after"):
        options.append(f"after {', '.join(task['after'])}")
    lines.append(f"  options   {', '.join(options)}")
    lines.append(f"  prompt    {_one_line(task.get('prompt'), 200)}")
    for a in task.get("attempts") or []:
        status = tasks_result.session_status(root, a.get("session_id"))
        now = f"session {status.get('state')}" if status else "no session yet"
        end = f"{a.get('outcome')}: {a.get('reason')}" if a.get("outcome") else now
        where = f" pane {a['pane']}" if a.get("pane") else (f" pid {a['pid']}" if a.get("pid") else "")
        lines.append(f"  attempt {a.get('n')} {a.get('session_id')}{where}: {_one_line(end, 120)}")
    result = task.get("result") or live
    if result:
        lines.append("result" + (" so far" if result is live else "") + ":")
        lines += _result_lines(result)
    return "\n".join(lines) + "\n"


def _result_lines(r: dict[str, Any]) -> list[str]:
    out = [f"  {r.get('state')}: {r.get('reason')}"]
    if r.get("last_message"):
        out.append(f"  said      {_one_line(r['last_message'], 300)}")
    cost = f", ${r['cost_usd']:.4f}" if isinstance(r.get("cost_usd"), (int, float)) else ""
    tokens = r.get("tokens") or {}
    tok = f", {tokens.get('input', 0)} in / {tokens.get('output', 0)} out tokens" if tokens else ""
    duration = r.get("duration_s")
    took = format_age(float(duration)) if isinstance(duration, (int, float)) else "?"
    out.append(f"  work      {r.get('turns')} turns, {r.get('tool_uses')} tool uses, "
               f"{r.get('tool_failures')} failed, {took}{cost}{tok}")  # fmt: skip
    commits = r.get("commits") or []
    out.append(
        f"  commits   {r.get('commits_total', len(commits))}"
        + (f" on {r['branch']}" if r.get("branch") else "")
    )
    out += [f"    {c.get('sha', '')[:10]} {_one_line(c.get('subject'), 90)}" for c in commits]
    files = r.get("files") or []
    out.append(f"  files     {r.get('files_total', len(files))}")
    for f in files:
        added = "-" if f.get("added") is None else f"+{f['added']}"
        removed = "-" if f.get("removed") is None else f"-{f['removed']}"
        out.append(f"    {added:>6} {removed:>6}  {f.get('path')}" + ("" if f.get("kind") == "committed"
                                                                   else f"  ({f.get('kind')})"))  # fmt: skip
    if r.get("git_error"):
        out.append(f"  git       {r['git_error']}")
    if r.get("transcript_path"):
        out.append(f"  transcript {r['transcript_path']}")
    return out
