"""Git for tasks: the project's repository, a task's worktree, and what an agent changed (spec/tasks.md).

Shared by the CLI (``task add``, ``task show``, ``task clean``, ``start --worktree``) and ccm-agentd
(launching, results). Every call runs ``git`` with a timeout, no terminal, no pager and no prompts, so a hung
credential helper or a huge repository cannot block the daemon's loop for long.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ccm_hooks.errors import CcmError

GIT_TIMEOUT_S = 20.0
MAX_FILES = 200  # in a result: enough to review, bounded so a task that touched node_modules stays small
MAX_COMMITS = 100
EXCLUDE_LINE = "/.claude/worktrees/"
_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}


class GitError(CcmError):
    pass


def git(cwd: str, *args: str, timeout: float = GIT_TIMEOUT_S, check: bool = True) -> str:
    """stdout of ``git -C cwd args``; GitError (one line: git's own message) when it fails."""
    try:
        out = subprocess.run(
            ["git", "-C", cwd, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **_ENV},
            errors="replace",
        )
    except FileNotFoundError:
        raise GitError("git is not installed (or not on PATH)") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} in {cwd} took more than {timeout:.0f} s") from None
    if check and out.returncode != 0:
        message = (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]
        raise GitError(f"git {args[0]} in {cwd}: {message}")
    return out.stdout


def toplevel(directory: str) -> str | None:
    """The root of the work tree holding ``directory``, or None if it is not in a git repository."""
    try:
        return git(directory, "rev-parse", "--show-toplevel").strip() or None
    except GitError:
        return None


def resolve_commit(repo: str, ref: str) -> str:
    try:
        return git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", ref + "^{commit}").strip()
    except GitError:
        raise CcmError(f"{ref!r} is not a commit in {repo}; give a branch, tag or commit (--base)") from None


def ensure_excluded(repo: str) -> None:
    """Keep worktrees under ``.claude/worktrees/`` out of ``git status`` in the user's own work tree.

    ``claude --worktree`` puts its worktrees there and leaves them showing as untracked (checked on 2.1.197
    and 2.1.328); ccm adds one line to the repository's local ``info/exclude`` (never committed, never
    shared) once, and never removes it.
    """
    common = git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir").strip()
    path = os.path.join(common, "info", "exclude")
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            if EXCLUDE_LINE in (line.strip() for line in fh):
                return
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"\n# worktrees of ccm tasks and claude --worktree\n{EXCLUDE_LINE}\n")


def branch_exists(repo: str, branch: str) -> bool:
    return bool(git(repo, "branch", "--list", branch).strip())


def worktree_branch(path: str) -> str | None:
    """The branch checked out in the worktree at ``path`` (None if detached, missing or not a worktree)."""
    if not os.path.isdir(path):
        return None
    try:
        name = git(path, "symbolic-ref", "--quiet", "--short", "HEAD").strip()
    except GitError:
        return None
    return name or None


def add_worktree(repo: str, path: str, branch: str, base: str | None) -> str:
    """Make (or find) the worktree at ``path`` on ``branch``: a new branch from ``base`` the first time, the
    existing branch on a retry. Idempotent: a restarted daemon repeats this safely. Returns what it did."""
    if worktree_branch(path) == branch:
        return "reused"
    ensure_excluded(repo)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if branch_exists(repo, branch):
        git(repo, "worktree", "add", "--quiet", path, branch)
        return "added on the existing branch"
    args = ["worktree", "add", "--quiet", "-b", branch, path]
    git(repo, *args, *([base] if base else []))
    return "added"


def head(path: str) -> str | None:
    try:
        return git(path, "rev-parse", "--verify", "--quiet", "HEAD").strip() or None
    except GitError:
        return None


@dataclass
class Change:
    path: str
    added: int | None  # None: a binary file
    removed: int | None
    kind: str  # committed | uncommitted | untracked

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "added": self.added, "removed": self.removed, "kind": self.kind}


def _numstat(text: str, kind: str) -> list[Change]:
    out = []
    for line in text.splitlines():
        parts = line.split("\t", 2)
        if len(parts) != 3:
            continue
        added, removed, name = parts
        out.append(Change(name, int(added) if added.isdigit() else None,
                          int(removed) if removed.isdigit() else None, kind))  # fmt: skip
    return out


def commits(path: str, base: str, tip: str = "HEAD") -> list[dict[str, str]]:
    """``base..tip``, oldest first: sha and subject."""
    text = git(path, "log", "--reverse", "--format=%H%x09%s", f"{base}..{tip}", "--")
    return [
        {"sha": sha, "subject": subject}
        for sha, _, subject in (ln.partition("\t") for ln in text.splitlines())
    ]


def committed_changes(path: str, base: str, tip: str = "HEAD") -> list[Change]:
    return _numstat(git(path, "diff", "--numstat", "--no-renames", f"{base}...{tip}", "--"), "committed")


def uncommitted_changes(path: str) -> list[Change]:
    """Tracked files changed against HEAD (staged or not), then untracked files (not ignored)."""
    changes = _numstat(git(path, "diff", "--numstat", "--no-renames", "HEAD", "--"), "uncommitted")
    untracked = git(path, "ls-files", "--others", "--exclude-standard", "-z").split("\0")
    for name in filter(None, untracked):
        changes.append(Change(name, _count_lines(os.path.join(path, name)), 0, "untracked"))
    return changes


def _count_lines(path: str, limit: int = 8 << 20) -> int | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit)
    except OSError:
        return None
    if b"\0" in data[:8192]:
        return None  # binary, as git's numstat says "-"
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def unkept_commits(path: str) -> list[str]:
    """Commits reachable from the worktree's HEAD that no branch holds: what removing it would lose."""
    return git(path, "rev-list", "HEAD", "--not", "--branches").split()


def remove_worktree(repo: str, path: str, force: bool) -> None:
    git(repo, "worktree", "remove", *(["--force", "--force"] if force else []), path)


def summarize(changes: Sequence[Change]) -> str:
    shown = ", ".join(c.path for c in changes[:5])
    return shown + (f" and {len(changes) - 5} more" if len(changes) > 5 else "")
