"""config.toml edited by ``ccm-hooks watch on|off`` (the real CLI) keeps what the person wrote."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ccm_hooks.statedir import config

CLI = shutil.which("ccm-hooks", path=os.path.dirname(sys.executable)) or "ccm-hooks"

HAND_WRITTEN = """\
# ccm settings, kept by hand — see README
# (second line of the header)

[watch]            # every new session
enabled   = false  # off unless asked
max_turns = 10     # aligned by hand
prompt    = 'continue with the plan'

# ---- the daemon -------------------------------------------------------------
[agentd]
notify_commands = [
    "ntfy publish ccm \\"$CCM_SUMMARY\\"",   # my phone
    'logger -t ccm "$CCM_SUMMARY"',
]
stall_after_s = 900       # long builds here


[projects."/home/me/src/app".watch]
enabled = true  # this repo is safe
max_turns = 5

# trailing note, after everything
"""


def ccm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60, check=False)


def put(ccm_home: Path, text: str) -> Path:
    ccm_home.mkdir(parents=True, exist_ok=True)
    path = ccm_home / "config.toml"
    path.write_text(text)
    return path


def table_block(text: str, header: str) -> str:
    """The lines of ``text`` from ``header`` up to the next table header (the untouched table's bytes)."""
    lines = text.splitlines(keepends=True)
    start = lines.index(header + "\n")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    return "".join(lines[start:end])


def test_watch_commands_keep_comments_and_hand_formatting(ccm_home: Path, tmp_path: Path) -> None:
    path = put(ccm_home, HAND_WRITTEN)
    project = tmp_path / "proj"
    project.mkdir()
    for args in (
        ("watch", "on", "--global", "--max-turns", "3"),
        ("watch", "on", "--project", str(project)),
        ("watch", "off", "--global"),
    ):
        out = ccm(*args)
        assert out.returncode == 0, out.stderr
    text = path.read_text()
    # Every comment line, and the untouched tables byte for byte.
    for line in HAND_WRITTEN.splitlines():
        if line.lstrip().startswith("#"):
            assert line in text.splitlines(), line
    for header in ("[agentd]", '[projects."/home/me/src/app".watch]'):
        # (a table appended after the last one brings its own blank line)
        assert table_block(text, header).rstrip("\n") == table_block(HAND_WRITTEN, header).rstrip("\n")
    assert text.startswith(HAND_WRITTEN[: HAND_WRITTEN.index("[watch]")])
    # The edited table changed only its values, keeping alignment and trailing comments.
    watch_block = table_block(text, "[watch]            # every new session")
    assert "enabled   = false  # off unless asked\n" in watch_block
    assert "max_turns = 3     # aligned by hand\n" in watch_block
    assert "prompt    = 'continue with the plan'\n" in watch_block
    assert watch_block.endswith(
        "\n# ---- the daemon -------------------------------------------------------------\n"
    )
    data = tomllib.loads(text)
    assert data["watch"] == {"enabled": False, "max_turns": 3, "prompt": "continue with the plan"}
    assert data["projects"][str(project.resolve())] == {"watch": {"enabled": True}}
    assert data["agentd"]["stall_after_s"] == 900 and len(data["agentd"]["notify_commands"]) == 2
    assert not (ccm_home / "config.toml.bak").exists()  # nothing lost, so no copy to keep
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # the user's file keeps its mode


def test_a_new_key_goes_after_the_last_key_not_into_the_next_tables_comments(ccm_home: Path) -> None:
    path = put(ccm_home, HAND_WRITTEN)
    assert ccm("watch", "on", "--global", "--no-progress", "4").returncode == 0
    block = table_block(path.read_text(), "[watch]            # every new session")
    lines = block.splitlines()
    assert lines.index("no_progress_turns = 4") == lines.index("prompt    = 'continue with the plan'") + 1


def test_first_write_creates_a_private_file(ccm_home: Path) -> None:
    assert ccm("watch", "on", "--global", "--max-turns", "2").returncode == 0
    path = ccm_home / "config.toml"
    assert tomllib.loads(path.read_text()) == {"watch": {"max_turns": 2, "enabled": True}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_project_tables_under_an_explicit_projects_table(ccm_home: Path, tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    original = f'[projects]\n"{project}" = {{ watch = {{ enabled = false }} }}  # inline, by hand\n'
    path = put(ccm_home, original)
    assert ccm("watch", "on", "--project", str(project), "--max-turns", "6").returncode == 0
    text = path.read_text()
    assert "# inline, by hand" in text
    assert tomllib.loads(text)["projects"][str(project)]["watch"] == {"enabled": True, "max_turns": 6}


def test_a_watch_entry_that_is_not_a_table_is_refused(ccm_home: Path) -> None:
    path = put(ccm_home, "watch = 5  # oops\n")
    out = ccm("watch", "on", "--global")
    assert out.returncode == 1 and "watch is not a table" in out.stderr and out.stderr.count("\n") == 1
    assert path.read_text() == "watch = 5  # oops\n"


def test_a_fifo_config_is_refused_without_blocking(ccm_home: Path) -> None:
    ccm_home.mkdir(parents=True)
    os.mkfifo(ccm_home / "config.toml")
    out = ccm("watch", "on", "--global")  # the 60 s timeout of ccm() would fire if it blocked
    assert out.returncode == 1 and "is a FIFO (named pipe), not a regular file" in out.stderr
    assert stat.S_ISFIFO(os.lstat(ccm_home / "config.toml").st_mode)
    with pytest.raises(Exception, match="FIFO"):
        config.read_config(str(ccm_home))


def test_a_read_only_config_is_left_alone(ccm_home: Path) -> None:
    path = put(ccm_home, "[watch]\nenabled = false\n")
    path.chmod(0o444)
    out = ccm("watch", "on", "--global")
    assert out.returncode == 1 and "is read-only (mode 0444)" in out.stderr and "chmod u+w" in out.stderr
    assert path.read_text() == "[watch]\nenabled = false\n"


def test_an_editor_saving_meanwhile_is_not_overwritten(
    ccm_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file changes between ccm's read and its swap: the edit is redone on the editor's version."""
    from ccm_hooks.statedir import editfile

    path = put(ccm_home, "[watch]\nenabled = false\n")
    real_replace = editfile.replace
    calls = []

    def editor_saves_first(snap: editfile.Snapshot, data: bytes, mode: int) -> None:
        if not calls:
            path.write_text("[watch]\nenabled = false\n# saved by the editor\n[agentd]\nliveness_s = 5\n")
        calls.append(1)
        real_replace(snap, data, mode)

    monkeypatch.setattr(editfile, "replace", editor_saves_first)
    config.update_table(str(ccm_home), ("watch",), {"enabled": True})
    text = path.read_text()
    assert len(calls) == 2 and "# saved by the editor" in text
    assert tomllib.loads(text) == {"watch": {"enabled": True}, "agentd": {"liveness_s": 5}}
