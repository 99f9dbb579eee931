"""Running the real handler the way Claude Code does: a subprocess with the payload on stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures"
HANDLER = str(Path(sys.executable).parent / "ccm-hook")
CCM_HOOKS = str(Path(sys.executable).parent / "ccm-hooks")
MINIMAL_PATH = "/usr/bin:/bin"  # claude's PATH in e2e tests: no venv, as tmux, launchd and cron start it
# Every optional common field and every process field set, as under ccm in tmux; CCM_FIELD_CAP="" means
# the default whatever the developer's environment says.
FULL_ENV = {
    "CLAUDE_PROJECT_DIR": "/home/dev/work/proj",
    "CCM_TASK_ID": "task-7",
    "TMUX": "/tmp/tmux-1000/default,4242,0",
    "TMUX_PANE": "%3",
    "CCM_FIELD_CAP": "",
}


def payload(name: str, **changes: Any) -> dict[str, Any]:
    """A captured payload from tests/fixtures/payloads, with some fields replaced."""
    data: dict[str, Any] = json.loads((FIXTURES / "payloads" / f"{name}.json").read_text())
    data.update(changes)
    return data


def run_hook(
    data: bytes | dict[str, Any], env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[bytes]:
    stdin = data if isinstance(data, bytes) else json.dumps(data).encode()
    return subprocess.run(
        [HANDLER, *args], input=stdin, capture_output=True, env={**os.environ, **(env or {})}, timeout=60
    )


def spawn_hook(data: bytes | dict[str, Any], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start the handler without waiting; the payload is written and stdin closed."""
    stdin = data if isinstance(data, bytes) else json.dumps(data).encode()
    proc = subprocess.Popen(
        [HANDLER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdin is not None
    proc.stdin.write(stdin)
    proc.stdin.close()
    proc.stdin = None  # so communicate() does not flush the closed pipe
    return proc


def read_log(home: Path, session_id: str) -> list[dict[str, Any]]:
    """The session's records. A last line without its newline is a record still being appended (tests
    poll logs that live sessions are writing): skipped, like every reader of the spec does."""
    path = home / "events" / f"{session_id}.jsonl"
    lines = path.read_bytes().split(b"\n")
    return [json.loads(line) for line in lines[:-1]]


def read_status(home: Path, session_id: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((home / "status" / f"{session_id}.json").read_text())
    return result


def install_hooks(project: Path) -> None:
    """``ccm-hooks install`` into a scratch project, as a user would run it."""
    out = subprocess.run(
        [CCM_HOOKS, "install", "--project", str(project)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
