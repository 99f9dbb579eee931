"""A task's result: what a person reviews in a minute (spec/tasks.md#result). Computed by ccm-agentd when a
task ends and stored in the task file; ``task show`` computes the same thing live for a task still running.
"""

from __future__ import annotations

import os
from typing import Any

from ccm_hooks import fileio, jsonl, paths
from ccm_hooks.statedir import reader, tasks_git
from ccm_hooks.statedir.timefmt import parse_ts

MAX_TRANSCRIPT_BYTES = 64 << 20  # token counts come from the transcript; a bigger one is not read


def session_status(root: str, session_id: object) -> dict[str, Any] | None:
    if not paths.valid_session_id(session_id):
        return None
    return reader.read_status(paths.status_path(root, str(session_id)))


def compute(root: str, task: dict[str, Any], state: str, reason: str | None, now: float) -> dict[str, Any]:
    """The result of ``task`` ending now in ``state`` for ``reason``."""
    attempts = task.get("attempts") or []
    statuses = [session_status(root, a.get("session_id")) for a in attempts]
    last = next((s for s in reversed(statuses) if s is not None), None)
    counters = [s.get("counters") or {} for s in statuses if s is not None]
    started = parse_ts(attempts[0].get("started_at")) if attempts else None
    result: dict[str, Any] = {
        "state": state,
        "reason": reason,
        "last_message": (last or {}).get("last_assistant_message"),
        "turns": sum(int(c.get("turns") or 0) for c in counters),
        "tool_uses": sum(int(c.get("tool_uses") or 0) for c in counters),
        "tool_failures": sum(int(c.get("failures") or 0) for c in counters),
        "duration_s": round(now - started, 1) if started else None,
        "sessions": [a.get("session_id") for a in attempts],
        "transcript_path": (last or {}).get("transcript_path"),
        "cost_usd": _headless_cost(root, task),
        "tokens": _tokens([s.get("transcript_path") for s in statuses if s is not None]),
    }
    result.update(git_result(task))
    return result


def git_result(task: dict[str, Any]) -> dict[str, Any]:
    """Branch, commits ``base..branch`` and the files changed (committed and not), or why they are unknown."""
    out: dict[str, Any] = {"branch": task.get("branch"), "base_commit": task.get("base_commit"),
                           "head_commit": None, "commits": [], "commits_total": 0, "files": [],
                           "files_total": 0, "git_error": None}  # fmt: skip
    workdir, base = task.get("workdir") or task.get("project"), task.get("base_commit")
    if not task.get("git") or not workdir or not os.path.isdir(workdir):
        if task.get("git"):
            out["git_error"] = f"the work tree {workdir} is gone"
        return out
    try:
        out["head_commit"] = tasks_git.head(workdir)
        changes: list[tasks_git.Change] = []
        if base:
            found = tasks_git.commits(workdir, base)
            out["commits"] = found[-tasks_git.MAX_COMMITS :]
            out["commits_total"] = len(found)
            changes += tasks_git.committed_changes(workdir, base)
        changes += tasks_git.uncommitted_changes(workdir)
    except tasks_git.GitError as exc:
        out["git_error"] = str(exc)
        return out
    out["files"] = [c.as_dict() for c in changes[: tasks_git.MAX_FILES]]
    out["files_total"] = len(changes)
    return out


def _tokens(transcripts: list[object]) -> dict[str, int] | None:
    """Token counts summed over the assistant messages of the transcripts (each message once: Claude Code
    writes one transcript line per content block, each repeating the message's usage)."""
    totals = {"input": 0, "output": 0, "cache_read": 0, "cache_creation": 0}
    found = False
    for path in transcripts:
        if not isinstance(path, str) or not os.path.isabs(path):
            continue
        try:
            if os.path.getsize(path) > MAX_TRANSCRIPT_BYTES:
                continue
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        seen: set[str] = set()
        for _, rec in fileio.iter_lines(data):
            message = rec.get("message")
            if rec.get("type") != "assistant" or not isinstance(message, dict):
                continue
            usage, mid = message.get("usage"), str(message.get("id"))
            if not isinstance(usage, dict) or mid in seen:
                continue
            seen.add(mid)
            found = True
            for key, field in (("input", "input_tokens"), ("output", "output_tokens"),
                               ("cache_read", "cache_read_input_tokens"),
                               ("cache_creation", "cache_creation_input_tokens")):  # fmt: skip
                value = usage.get(field)
                if isinstance(value, int):
                    totals[key] += value
    return totals if found else None


def _headless_cost(root: str, task: dict[str, Any]) -> float | None:
    """``total_cost_usd`` of each headless attempt's final ``result`` line, summed. Interactive sessions write
    no cost anywhere a reader can trust (spec/tasks.md#cost), so theirs is null."""
    if not task.get("headless"):
        return None
    total, found = 0.0, False
    for attempt in task.get("attempts") or []:
        path = attempt.get("output")
        if not isinstance(path, str):
            continue
        last = jsonl.last_record(path)
        cost = (last or {}).get("total_cost_usd") if (last or {}).get("type") == "result" else None
        if isinstance(cost, (int, float)) and not isinstance(cost, bool):
            total += float(cost)
            found = True
    return round(total, 6) if found else None


def headless_result(path: str) -> dict[str, Any] | None:
    """The final ``result`` line of a headless attempt's stream-json output, if it finished."""
    try:
        last = jsonl.last_record(path)
    except OSError:
        return None
    return last if last is not None and last.get("type") == "result" else None


def lost_work(task: dict[str, Any]) -> list[str]:
    """What removing the task's worktree would lose, one phrase each; empty when nothing."""
    workdir = task.get("workdir")
    if task.get("in_place") or not isinstance(workdir, str) or not os.path.isdir(workdir):
        return []
    lost = []
    dirty = tasks_git.uncommitted_changes(workdir)
    if dirty:
        lost.append(f"{len(dirty)} uncommitted file(s): {tasks_git.summarize(dirty)}")
    unkept = tasks_git.unkept_commits(workdir)
    if unkept:
        lost.append(f"{len(unkept)} commit(s) no branch holds ({', '.join(c[:10] for c in unkept[:3])})")
    return lost


def summary_line(task: dict[str, Any]) -> str:
    """One line for notifications and lists: state, reason and how much changed."""
    result = task.get("result") or {}
    files = result.get("files_total", len(result.get("files") or []))
    commits = result.get("commits_total", len(result.get("commits") or []))
    name = task.get("name") or " ".join(str(task.get("prompt") or "").split())[:60]
    counted = f"{commits} commit(s), {files} file(s)"
    return f"task {task.get('id')} {task.get('state')}: {name} ({counted}); {task.get('reason') or ''}"
