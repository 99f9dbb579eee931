"""The per-user shim ``$CCM_HOME/bin/ccm-hook`` that every registered hook command execs (spec/settings.md).

Why a shim: the command in a settings file must not name this machine's venv (project settings are
committed; a teammate's ccm lives elsewhere) and must not rely on PATH (claude started from tmux,
launchd or cron often has a minimal one). So the command names only a fixed place under the state dir,
and this file, written by ``ccm-hooks install`` on each machine, knows where Python and ccm are.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import tempfile
from pathlib import Path

import ccm_hooks
from ccm_hooks import paths
from ccm_hooks.errors import CcmError

SHIM_NAME = "ccm-hook"
SHIM_MODE = 0o700
MAX_SHEBANG = 120  # Linux before 5.1 cut shebang lines at 127 bytes; stay well clear
PYTHON_FLAGS = "-IS"  # isolated (no PYTHON* env, no user site) + no site: fast, immune to PYTHONPATH
WRITTEN_BY = "Written by `ccm-hooks install`; rewritten on every install, so edits here do not last."
# A line doctor reads back to find the interpreter, whichever form the shim has.
PYTHON_LINE_PREFIX = "# python: "


def shim_path(state_root: str | os.PathLike[str]) -> Path:
    return Path(paths.bin_dir(os.fspath(state_root))) / SHIM_NAME


def package_parent() -> str:
    """The directory holding the ``ccm_hooks`` package (site-packages, or the checkout when editable)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(ccm_hooks.__file__)))


# Import errors (ccm moved or uninstalled) must not disturb claude: one line on stderr (ignored by claude on
# exit 0, read by `ccm-hooks doctor`), one JSON line in hooks.log in the handler's format (so doctor's log
# check sees it too), exit 0. Errors inside main() are the handler's business.
_PROGRAM = """\
import sys
sys.path.insert(0, %(pkg_parent)r)
try:
    from ccm_hooks.handler import main
except BaseException as exc:
    msg = 'cannot import ccm_hooks.handler from %%s: %%r; run ccm-hooks install' %% (sys.path[0], exc)
    sys.stderr.write('ccm-hook: ' + msg + '\\n')
    try:
        import json, os, time
        root = os.environ.get('CCM_HOME') or os.path.join(os.path.expanduser('~'), '.ccm')
        now = time.time()
        micros = int(now * 1e6) %% 1000000
        ts = time.strftime('%%Y-%%m-%%dT%%H:%%M:%%S', time.gmtime(now)) + '.%%06dZ' %% micros
        entry = {'ts': ts, 'pid': os.getpid(), 'event': (sys.argv[1:] or [None])[0], 'session_id': None,
                 'error': msg, 'where': 'ccm-hook shim'}
        log = os.path.join(root, 'log', 'hooks.log')
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, 'a', encoding='ascii') as fh:
            fh.write(json.dumps(entry) + '\\n')
    except Exception:
        pass
    raise SystemExit(0)
raise SystemExit(main())
"""


def _program(pkg_parent: str) -> str:
    return _PROGRAM % {"pkg_parent": pkg_parent}


def render(python: str, pkg_parent: str) -> str:
    """The shim's text for interpreter ``python`` and package directory ``pkg_parent``."""
    if "\n" in python or "\r" in python:
        raise CcmError(f"the Python path {python!r} contains a line break; install ccm in another venv")
    shebang = f"#!{python} {PYTHON_FLAGS}"
    header = f"# {WRITTEN_BY}\n{PYTHON_LINE_PREFIX}{python}\n"
    if len(shebang) <= MAX_SHEBANG and not any(c.isspace() for c in python):
        return f"{shebang}\n{header}{_program(pkg_parent)}"
    # The kernel splits shebang arguments on whitespace and truncates long lines: go through sh instead.
    code = _program(pkg_parent)
    return f'#!/bin/sh\n{header}exec {shlex.quote(python)} {PYTHON_FLAGS} -c {shlex.quote(code)} "$@"\n'


def current_python() -> str:
    # Not resolved: a venv's bin/python symlink keeps working when the base interpreter is upgraded.
    return os.path.abspath(sys.executable)


def write_shim(state_root: str | os.PathLike[str]) -> Path:
    """(Re)write ``<state_root>/bin/ccm-hook`` for this interpreter and this ccm; return its path."""
    root = os.fspath(state_root)
    paths.ensure_dir(root)
    bindir = paths.bin_dir(root)
    paths.ensure_dir(bindir)
    os.chmod(bindir, paths.DIR_MODE)  # ours alone: what runs on every hook must not be writable by others
    target = shim_path(root)
    data = render(current_python(), package_parent()).encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=bindir, prefix=f".{SHIM_NAME}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), SHIM_MODE)
            os.fsync(fh.fileno())
        # Atomic: a hook firing right now execs either the old shim or the new one, never half a file.
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def shim_python(text: str) -> str | None:
    """The interpreter a shim's text runs (from its ``# python:`` line), or None if it has none."""
    for line in text.splitlines()[:5]:
        if line.startswith(PYTHON_LINE_PREFIX):
            return line[len(PYTHON_LINE_PREFIX) :]
    return None
