"""Claude Code's folder trust, as ccm sees it without ever answering for the user (spec/tasks.md#trust).

Checked on 2.1.197 and 2.1.328: an interactive claude started in a folder nobody trusted shows the trust
dialog before anything else (no hook fires until it is answered; 2.1.197 preselects "Yes", 2.1.328 "No");
a folder inside a trusted one is trusted, and a git worktree is trusted when its main repository is. ``-p``
skips the dialog altogether, so a headless task checks ``~/.claude.json`` itself first.
"""

from __future__ import annotations

import json
import os

TRUST_MARKERS = ("Accessing workspace", "trust this folder")


def shows_trust_dialog(screen: str) -> bool:
    return all(marker in screen for marker in TRUST_MARKERS)


def claude_json_path() -> str:
    config_dir = os.environ.get("CLAUDE_CONFIG_DIR")
    if config_dir:
        return os.path.join(config_dir, ".claude.json")
    return os.path.join(os.path.expanduser("~"), ".claude.json")


def trusted(directory: str) -> bool | None:
    """True if the user accepted the trust dialog for ``directory`` or a folder above it; False if not;
    None if Claude Code's file cannot be read (then only an interactive launch can tell)."""
    try:
        with open(claude_json_path(), "rb") as fh:
            data = json.loads(fh.read())
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return None
    projects = data.get("projects") if isinstance(data, dict) else None
    if not isinstance(projects, dict):
        return False
    path = os.path.realpath(directory)
    for spelling in {os.path.abspath(directory), path}:
        here = spelling
        while True:
            entry = projects.get(here)
            if isinstance(entry, dict) and entry.get("hasTrustDialogAccepted") is True:
                return True
            parent = os.path.dirname(here)
            if parent == here:
                break
            here = parent
    return False
