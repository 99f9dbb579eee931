"""A $CCM_HOME that cannot be used (a file, a FIFO, an unreadable or foreign directory, a file where a
subdirectory belongs) is one line saying what to do and exit 1, from every command of both CLIs: never a
traceback, never a hang."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
COMMANDS = [
    ["ccm-hooks", "status"],
    ["ccm-hooks", "status", "--json"],
    ["ccm-hooks", "events"],
    ["ccm-hooks", "events", "--follow"],
    ["ccm-hooks", "send", "abcd", "hello"],
    ["ccm-hooks", "watch", "on", "--global"],
    ["ccm-hooks", "watch", "status"],
    ["ccm-hooks", "top", "-n", "1"],
    ["ccm-hooks", "prune", "--older-than", "7d"],
    ["ccm-agentd", "status"],
    ["ccm-agentd", "run"],
]


def run(argv: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CCM_HOME": str(home)}
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, env=env, timeout=30
    )


def one_line_exit_1(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    for needle in needles:
        assert needle in out.stderr, out.stderr


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a) for a in COMMANDS])
def test_ccm_home_is_a_file(tmp_path: Path, argv: list[str]) -> None:
    home = tmp_path / "home-file"
    home.write_text("not a directory")
    one_line_exit_1(run(argv, home), "is a regular file, not a directory", "point CCM_HOME at a directory")


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a) for a in COMMANDS])
def test_ccm_home_is_a_fifo(tmp_path: Path, argv: list[str]) -> None:
    home = tmp_path / "home-fifo"
    os.mkfifo(home)
    one_line_exit_1(run(argv, home), "is a FIFO (named pipe), not a directory")


def test_ccm_home_inside_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    one_line_exit_1(
        run(["ccm-hooks", "status"], tmp_path / "f" / "deeper" / ".ccm"), "which is a regular file"
    )


def test_a_file_where_a_subdirectory_belongs(tmp_path: Path) -> None:
    home = tmp_path / "state"
    home.mkdir(mode=0o700)
    (home / "status").write_text("")
    one_line_exit_1(
        run(["ccm-hooks", "status"], home), "/status is a regular file where ccm keeps a directory"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_state_dir_owned_by_someone_else(tmp_path: Path) -> None:
    home = tmp_path / "state"
    home.mkdir(mode=0o700)
    os.chown(home, 65534, 65534)
    for argv in (["ccm-hooks", "status"], ["ccm-hooks", "watch", "on", "--global"], ["ccm-agentd", "status"]):
        one_line_exit_1(run(argv, home), "belongs to uid 65534, not to you")


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0, reason="needs setpriv as root")
def test_an_unreadable_state_dir(tmp_path: Path) -> None:
    """As an ordinary user (root reads everything), on a directory of that user's with mode 000."""
    outside = Path(tempfile.mkdtemp(prefix="ccm-home-test-", dir="/tmp"))  # reachable by that user
    try:
        outside.chmod(0o755)
        home = outside / "state"
        home.mkdir(mode=0o000)
        os.chown(home, 65534, 65534)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(outside), "CCM_HOME": str(home)}
        setpriv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        out = subprocess.run(
            [*setpriv, sys.executable, "-c", "from ccm_hooks.commands.main import main; main()", "status"],
            capture_output=True, text=True, env={**env, "PYTHONPATH": str(Path(__file__).parent.parent)},
            timeout=30,
        )  # fmt: skip
        one_line_exit_1(out, "permission denied", f"chmod 700 {home}")
    finally:
        shutil.rmtree(outside)


def test_a_missing_state_dir_is_fine_for_readers(tmp_path: Path) -> None:
    out = run(["ccm-hooks", "status"], tmp_path / "not-yet")
    assert out.returncode == 0 and "no sessions recorded" in out.stdout
    assert not (tmp_path / "not-yet").exists()  # a read creates nothing
