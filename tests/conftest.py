"""Shared fixtures. Every test runs with a private HOME and CCM_HOME: nothing may touch the real home."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agentdrun import agentd  # noqa: F401
from tests.claude_harness import *  # noqa: F403
from tests.fleetrun import fleet_db, fleet_template, machines  # noqa: F401
from tests.pgcluster import pg_cluster, pg_dsn, pg_private  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Pin HOME, SHELL and CCM_HOME to scratch locations (as pre-commit and libtmux do)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SHELL", "/bin/sh")
    monkeypatch.setenv("CCM_HOME", str(home / ".ccm"))
    watch_vars = ("CCM_WATCH", "CCM_WATCH_MAX_TURNS", "CCM_WATCH_PROMPT", "CCM_WATCH_DONE_MARKER",
                  "CCM_WATCH_NO_PROGRESS", "CLAUDE_CODE_STOP_HOOK_BLOCK_CAP")  # fmt: skip
    for var in ("TMUX", "TMUX_PANE", "CLAUDE_PROJECT_DIR", "CCM_TASK_ID", "CLAUDECODE", *watch_vars):
        monkeypatch.delenv(var, raising=False)
    yield home


@pytest.fixture
def ccm_home(private_home: Path) -> Path:
    return Path(os.environ["CCM_HOME"])
