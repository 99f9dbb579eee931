"""What the hostile-state-dir tests share: special files where regular ones belong, another user's
ownership, and the real handler run with a deadline, a umask or a file-size limit."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.hookrun import HANDLER

NOBODY = 65534  # another user: the tests run as root, so they can hand files to it
KINDS = ("fifo", "socket", "directory", "symlink", "device")
QUICK_S = 4.0  # a handler that refuses something answers at once: never near the 5 s lock timeout


def make_special(path: Path, kind: str, target: Path | None = None) -> None:
    """Put a ``kind`` (see KINDS) at ``path``, where a regular file belongs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "socket":
        # AF_UNIX paths are limited to ~108 bytes: bind a relative name from inside the directory.
        here = os.getcwd()
        os.chdir(path.parent)
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path.name)
            sock.close()  # the socket file stays
        finally:
            os.chdir(here)
    elif kind == "directory":
        path.mkdir(mode=0o700)
    elif kind == "symlink":
        assert target is not None
        path.symlink_to(target)
    elif kind == "device":
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # what /dev/null is
    else:
        raise ValueError(kind)


def run_handler(
    data: dict[str, Any] | bytes,
    env: dict[str, str] | None = None,
    preexec: Callable[[], None] | None = None,
    user: int | None = None,
    timeout: float = 60,
) -> tuple[subprocess.CompletedProcess[bytes], float]:
    """The real handler (as hookrun.run_hook), its wall time; optionally with ``preexec`` (umask,
    rlimit) or as uid/gid ``user`` (setpriv)."""
    stdin = data if isinstance(data, bytes) else json.dumps(data).encode()
    argv = [HANDLER]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", HANDLER]
    started = time.monotonic()
    proc = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        env={**os.environ, **(env or {})},
        preexec_fn=preexec,
        timeout=timeout,
    )
    return proc, time.monotonic() - started


# Runs argv, then reports its exit code and peak RSS on stderr. Through this small process because a
# child's ru_maxrss counts the memory it had before exec, that is, the size of whoever forked it.
_MEASURE = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[1:])\n"
    "_, s, u = os.wait4(p.pid, 0)\n"
    "sys.stderr.write('%d %d' % (os.waitstatus_to_exitcode(s), u.ru_maxrss))\n"
)


def run_handler_rss(
    data: dict[str, Any] | bytes, env: dict[str, str] | None = None
) -> tuple[int, bytes, int]:
    """The real handler's exit code, stdout and peak RSS in KiB."""
    stdin = data if isinstance(data, bytes) else json.dumps(data).encode()
    proc = subprocess.run(
        [sys.executable, "-S", "-c", _MEASURE, HANDLER],
        input=stdin,
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )
    code, rss = proc.stderr.split()[-2:]
    return int(code), proc.stdout, int(rss)


def assert_quiet(proc: subprocess.CompletedProcess[bytes]) -> None:
    """Fail-open: exit 0, nothing on stdout (Claude would read it) or stderr."""
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")


def logged(home: Path) -> list[dict[str, Any]]:
    log = home / "log" / "hooks.log"
    if not log.is_file():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def setpriv_works(uid: int = NOBODY) -> bool:
    """Whether this process can run the handler's interpreter as ``uid`` (root, setpriv, a venv
    another user can read)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    probe = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", HANDLER],
        input=b"",
        capture_output=True,
        timeout=60,
        env={**os.environ, "CCM_HOME": "/nonexistent/ccm-probe"},
    )
    return probe.returncode == 0


def chown_tree(path: Path, uid: int) -> None:
    os.chown(path, uid, uid)
    for sub in path.rglob("*"):
        os.lchown(sub, uid, uid)
