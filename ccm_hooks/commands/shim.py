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
import stat
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


# First the shim checks that it and its directory are the user's alone (the registered command already
# checked both are owned by the user; group- or world-writable is what ``[ -O ]`` cannot see): two stats.
# A shim someone else could have edited refuses, with one line on stderr, and exits 0.
# Import errors (ccm moved or uninstalled) must not disturb claude: one line on stderr (ignored by claude on
# exit 0, read by `ccm-hooks doctor`), one JSON line in hooks.log in the handler's format (so doctor's log
# check sees it too), exit 0. Errors inside main() are the handler's business.
_PROGRAM = """\
import os, sys
def unsafe(path):
    st = os.stat(path)
    return st.st_uid != os.geteuid() or st.st_mode & 0o022
me = globals().get('__file__') or %(shim)r
for path in (me, os.path.dirname(me)):
    try:
        bad = unsafe(path)
    except OSError:
        bad = False
    if bad:
        sys.stderr.write('ccm-hook: not run: %%s is not yours alone; run ccm-hooks doctor\\n' %% path)
        raise SystemExit(0)
sys.path.insert(0, %(pkg_parent)r)
try:
    from ccm_hooks.handler import main
except BaseException as exc:
    msg = 'cannot import ccm_hooks.handler from %%s: %%r; run ccm-hooks install' %% (sys.path[0], exc)
    sys.stderr.write('ccm-hook: ' + msg + '\\n')
    try:
        import json, time
        root = os.environ.get('CCM_HOME') or os.path.join(os.path.expanduser('~'), '.ccm')
        now = time.time()
        micros = int(now * 1e6) %% 1000000
        ts = time.strftime('%%Y-%%m-%%dT%%H:%%M:%%S', time.gmtime(now)) + '.%%06dZ' %% micros
        entry = {'ts': ts, 'pid': os.getpid(), 'event': (sys.argv[1:] or [None])[0], 'session_id': None,
                 'error': msg, 'where': 'ccm-hook shim'}
        log = os.path.join(root, 'log', 'hooks.log')
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
        with os.fdopen(fd, 'a', encoding='ascii') as fh:
            fh.write(json.dumps(entry) + '\\n')
    except Exception:
        pass
    raise SystemExit(0)
raise SystemExit(main())
"""


def _program(pkg_parent: str, shim: str) -> str:
    return _PROGRAM % {"pkg_parent": pkg_parent, "shim": shim}


def render(python: str, pkg_parent: str, shim: str = "") -> str:
    """The shim's text for interpreter ``python``, package directory ``pkg_parent``, written at ``shim``."""
    if "\n" in python or "\r" in python:
        raise CcmError(f"the Python path {python!r} contains a line break; install ccm in another venv")
    shebang = f"#!{python} {PYTHON_FLAGS}"
    header = f"# {WRITTEN_BY}\n{PYTHON_LINE_PREFIX}{python}\n"
    code = _program(pkg_parent, shim)
    if len(shebang) <= MAX_SHEBANG and not any(c.isspace() for c in python):
        return f"{shebang}\n{header}{code}"
    # The kernel splits shebang arguments on whitespace and truncates long lines: go through sh instead.
    return f'#!/bin/sh\n{header}exec {shlex.quote(python)} {PYTHON_FLAGS} -c {shlex.quote(code)} "$@"\n'


def current_python() -> str:
    # Not resolved: a venv's bin/python symlink keeps working when the base interpreter is upgraded.
    return os.path.abspath(sys.executable)


def write_shim(state_root: str | os.PathLike[str]) -> Path:
    """(Re)write ``<state_root>/bin/ccm-hook`` for this interpreter and this ccm; return its path.

    The caller has checked the state dir (``state_dir_problem``); ``bin/`` must be a real directory of
    the user's (the registered command runs nothing otherwise) and is made 0700.
    """
    root = os.fspath(state_root)
    paths.ensure_dir(root)
    bindir = paths.bin_dir(root)
    paths.ensure_dir(bindir)
    st = os.lstat(bindir)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        what = "is not a directory" if not stat.S_ISDIR(st.st_mode) else f"belongs to {_owner(st.st_uid)}"
        raise CcmError(
            f"{bindir} {what}, not a directory of yours: remove it, then run ccm-hooks install again"
        )
    os.chmod(bindir, paths.DIR_MODE)  # ours alone: what runs on every hook must not be writable by others
    target = shim_path(root)
    data = render(current_python(), package_parent(), os.fspath(target)).encode("utf-8")
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


# --- whose files these are ---------------------------------------------------------------------------
# The registered command runs the shim only if the shim and bin/ are the user's; the handler trusts the
# state dir. Install refuses a state dir that is someone else's or writable by others, doctor names
# every such file. (The hot path's own check, ``paths.ownership_problems``, is being written alongside;
# these two are to be unified with it.)


def _owner(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def state_dir_problem(root: str) -> str | None:
    """One line saying why ccm must not use ``root`` as its state dir and what to do; None if it may.
    The same check every command runs first (``statedir.home``), plus: not writable by others."""
    from ccm_hooks.statedir import home

    try:
        home.usable(root)
    except CcmError as exc:
        return str(exc)
    try:
        st = os.stat(root)  # a symlinked state dir is fine: its target is checked
    except OSError:
        return None  # created on first use, 0700
    if st.st_mode & 0o022:
        mode = stat.S_IMODE(st.st_mode)
        return f"the state dir {root} is writable by others (mode {mode:04o}): run chmod go-w {root}"
    return None


def ownership_problems(root: str) -> list[str]:
    """What in the state dir is not the user's alone, each with its fix: the state dir itself, ``bin/``,
    the shim and ``config.toml`` (what decides what runs, or what a hook answers Claude)."""
    problem = state_dir_problem(root)
    if problem is not None:
        return [problem]
    out = []
    for path, fix_foreign in (
        (paths.bin_dir(root), "remove it (as its owner or root), then run ccm-hooks install"),
        (os.fspath(shim_path(root)), "remove it (as its owner or root), then run ccm-hooks install"),
        (
            os.path.join(root, "config.toml"),
            "check it, then make it yours: cp config.toml config.toml.new && mv config.toml.new config.toml",
        ),
    ):
        try:
            st = os.lstat(path)
        except OSError:
            continue  # missing: other checks say so
        if st.st_uid != os.geteuid():
            out.append(f"{path} belongs to {_owner(st.st_uid)}, not to you: {fix_foreign}")
        elif st.st_mode & 0o022 and not stat.S_ISLNK(st.st_mode):
            out.append(
                f"{path} is writable by others (mode {stat.S_IMODE(st.st_mode):04o}): run chmod go-w {path}"
            )
    return out


def shim_python(text: str) -> str | None:
    """The interpreter a shim's text runs (from its ``# python:`` line), or None if it has none."""
    for line in text.splitlines()[:5]:
        if line.startswith(PYTHON_LINE_PREFIX):
            return line[len(PYTHON_LINE_PREFIX) :]
    return None
