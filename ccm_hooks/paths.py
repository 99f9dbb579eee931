"""Where ccm keeps its files, and which names are allowed to become file names.

Standard library only: the hook handler imports this on every call.

Layout of the state dir (``$CCM_HOME``, default ``~/.ccm``), documented in spec/layout.md::

    events/<session_id>.jsonl   append-only event log, one JSON object per line
    status/<session_id>.json    current status, replaced atomically
    locks/<session_id>.lock     flock(2) target serialising one session's handlers
    locks/settings-<slug>.lock  serialises ccm-hooks install/uninstall on one settings file
    log/hooks.log               handler errors (handlers never print); log/cli.log: CLI tracebacks
    bin/ccm-hook                the shim registered commands exec (see spec/settings.md)
    backups/<slug>/             copies of a settings file taken before ccm changed it
    config.toml                 defaults people edit (watch mode); config.snapshot.json: its compiled form
    agentd/health.json          ccm-agentd's heartbeat

Per-kind directories (rather than one directory per session) keep ``tail -f events/*.jsonl`` and
``jq -s . status/*.json`` natural, and let the daemon watch two directories instead of one per session.
"""

from __future__ import annotations

import os
import stat

from ccm_hooks.errors import CcmError

DIR_MODE = 0o700
FILE_MODE = 0o600

MAX_ID_LEN = 128


def valid_session_id(value: object) -> bool:
    """True if ``value`` may be used as a file name under the state dir.

    Claude Code session ids are UUIDs; accept any plain ASCII token (letters, digits, ``-``, ``_``, starting
    with a letter or digit, at most 128 chars) so other producers still work, but nothing that could climb out
    of a directory, hide a file or differ only by Unicode normalisation. String methods, not ``re``: the
    handler imports this module on every call.
    """
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LEN or not value.isascii():
        return False
    return value[0].isalnum() and value.replace("-", "").replace("_", "").isalnum()


def state_dir(environ: os._Environ[str] | dict[str, str] | None = None) -> str:
    """The state dir: ``$CCM_HOME`` if set and non-empty, else ``~/.ccm``. Always absolute."""
    env = os.environ if environ is None else environ
    home = env.get("CCM_HOME") or os.path.join(os.path.expanduser("~"), ".ccm")
    return os.path.abspath(home)


def events_dir(root: str) -> str:
    return os.path.join(root, "events")


def status_dir(root: str) -> str:
    return os.path.join(root, "status")


def locks_dir(root: str) -> str:
    return os.path.join(root, "locks")


def log_dir(root: str) -> str:
    return os.path.join(root, "log")


def bin_dir(root: str) -> str:
    return os.path.join(root, "bin")


def backups_dir(root: str) -> str:
    return os.path.join(root, "backups")


def events_path(root: str, session_id: str) -> str:
    return os.path.join(root, "events", session_id + ".jsonl")


def status_path(root: str, session_id: str) -> str:
    return os.path.join(root, "status", session_id + ".json")


def lock_path(root: str, session_id: str) -> str:
    return os.path.join(root, "locks", session_id + ".lock")


def hooks_log_path(root: str) -> str:
    return os.path.join(root, "log", "hooks.log")


def agentd_health_path(root: str) -> str:
    """Rewritten by ccm-agentd while it runs; its age tells handlers whether a daemon is there."""
    return os.path.join(root, "agentd", "health.json")


# --- Ownership: nothing another user can write is trusted ------------------------------------------
#
# A state dir (or one of its directories, or config.toml) that another user owns or can write lets that
# user forge what ccm records and what a Stop hook answers Claude (a watch prompt is text Claude acts on).
# So the handler refuses to act on such a path (it fails open: exit 0, nothing on stdout), and
# `ccm-hooks doctor` explains the problem with `ownership_problems`. Checking costs one stat per
# directory, which replaces the mkdir each hook used to make anyway (spec/layout.md#ownership).

LAYOUT_DIRS = ("events", "status", "locks", "log")  # what the handler writes to
OTHER_DIRS = ("bin", "backups", "queue", os.path.join("queue", "done"), "agentd")
_WRITABLE_BY_OTHERS = 0o022
_EUID = os.geteuid()


class UnsafePath(CcmError, OSError):
    """A path ccm refuses to use: not the kind of file expected (a FIFO, a socket, a device, a symlink, a
    directory where a file belongs, or the reverse), or owned by another user, or writable by group or
    others. An OSError, so the handler's fail-open paths catch it; a CcmError, so a command prints the
    message (what is wrong and how to fix it) as one line."""


def _sh(path: str) -> str:
    """``path`` quoted for a shell command in a message (shlex would import ``re``)."""
    if path and all(c.isalnum() or c in "/._-+:@%," for c in path):
        return path
    return "'" + path.replace("'", "'\\''") + "'"


_KINDS = {
    stat.S_IFREG: "a regular file",
    stat.S_IFDIR: "a directory",
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def file_kind(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` is, for messages: "a FIFO (named pipe)", "a directory", ...
    The one wording every "X is <kind>, not a ..." message in ccm uses."""
    return _KINDS.get(stat.S_IFMT(mode), "a file of an unknown kind")


def owner_problem(st: os.stat_result, path: str) -> str | None:
    """Why ``st`` (of ``path``) is not private to the effective user, or None: the owner must be the
    effective uid, and neither group nor others may write it. (Read bits are ``validate``'s business.)"""
    if st.st_uid != _EUID:
        return (
            f"{path} is owned by uid {st.st_uid}, not by you (uid {_EUID}): another user could forge what "
            f"ccm records; remove it (or, as root, `chown {_EUID} {_sh(path)}`), or set CCM_HOME to a "
            "directory of your own"
        )
    if st.st_mode & _WRITABLE_BY_OTHERS:
        who = (
            "group and others" if st.st_mode & 0o022 == 0o022 else "group" if st.st_mode & 0o020 else "others"
        )
        return (
            f"{path} is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o}): another user could forge "
            f"what ccm records; run `chmod go-w {_sh(path)}`"
        )
    return None


def file_problem(st: os.stat_result, path: str, private: bool = True) -> str | None:
    """Why ``st`` (an lstat or fstat of ``path``) is not a file ccm may use, or None."""
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is {file_kind(st.st_mode)}, not a regular file: ccm opens nothing else; remove it"
    return owner_problem(st, path) if private else None


def dir_problem(st: os.stat_result, path: str) -> str | None:
    """Why ``st`` (a stat of ``path``, symlinks followed) is not a directory ccm may use, or None."""
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is {file_kind(st.st_mode)}, not a directory: remove it or set CCM_HOME elsewhere"
    return owner_problem(st, path)


def ensure_dir(path: str) -> None:
    """Create ``path`` (and missing parents) 0700 if it does not exist. No checks: for directories
    outside the state dir (a settings file's, a service file's). Inside it, use ``ensure_private_dir``."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if parent == path:
            raise
        ensure_dir(parent)
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            return


def ensure_private_dir(path: str) -> None:
    """Make sure ``path`` is a directory private to the user, creating it (and missing parents) 0700.

    Raises UnsafePath if it is not a directory, is owned by another user or is writable by group or
    others. An existing directory keeps its mode (ccm does not chmod a directory the user made; a
    group-readable one is ``validate``'s warning, not a refusal). Symlinks are followed: the state dir
    and its directories may be symlinks to directories of the user's. Parents are created but not checked.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        ensure_dir(path)
        st = os.stat(path)
    problem = dir_problem(st, path)
    if problem:
        raise UnsafePath(problem)


def ensure_layout(root: str, subdirs: tuple[str, ...] = LAYOUT_DIRS) -> None:
    """``ensure_private_dir`` the state dir and ``subdirs`` (default: the ones the handler writes to).

    One stat per directory when they exist: the handler calls this on every event, so a removed
    directory is recreated and a hijacked one refused before anything is opened in it.
    """
    ensure_private_dir(root)
    for sub in subdirs:
        ensure_private_dir(os.path.join(root, sub))


def ownership_problems(root: str, limit: int = 20) -> list[str]:
    """Everything under the state dir ``root`` that ccm would refuse to use, one message each (what is
    wrong and the command that fixes it), at most ``limit`` (then a count of the rest). For
    ``ccm-hooks doctor``; it reads the whole tree (one lstat per entry), so not for the hot path.

    Checked: the root (and whether its parent lets another user replace it), every known directory, the
    known files at the top (config.toml, its backup and snapshot, the shim, logs, ccm-agentd's files) and
    every entry of events/, status/, locks/, queue/. Temp files (``.*.tmp``) are not reported.
    """
    problems: list[str] = []
    try:
        st = os.stat(root)
    except FileNotFoundError:
        return problems
    except OSError as exc:
        return [f"{root} cannot be examined: {exc.strerror}"]
    top = dir_problem(st, root)
    if top:
        return [top]  # nothing inside it can be trusted either
    parent = os.path.dirname(root.rstrip("/")) or "/"
    try:
        pst = os.stat(parent)
        open_parent = pst.st_mode & _WRITABLE_BY_OTHERS and not pst.st_mode & stat.S_ISVTX
        if pst.st_uid not in (_EUID, 0) or open_parent:
            problems.append(
                f"{parent} (the state dir's parent) is owned by uid {pst.st_uid} with mode "
                f"{stat.S_IMODE(pst.st_mode):04o}: another user could replace {root}; move the state dir "
                "(CCM_HOME) to a directory only you can write"
            )
    except OSError:
        pass
    for sub in (*LAYOUT_DIRS, *OTHER_DIRS):
        path = os.path.join(root, sub)
        try:
            problem = dir_problem(os.stat(path), path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            problem = f"{path} cannot be examined: {exc.strerror}"
        if problem:
            problems.append(problem)
    files = [os.path.join(root, name) for name in ("config.toml", "config.toml.bak", "config.snapshot.json")]
    for sub in ("bin", "log", "agentd", "events", "status", "locks", "queue", os.path.join("queue", "done")):
        directory = os.path.join(root, sub)
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        files += [os.path.join(directory, n) for n in names if not (n.startswith(".") and n.endswith(".tmp"))]
    for path in files:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"{path} cannot be examined: {exc.strerror}")
            continue
        if stat.S_ISDIR(st.st_mode) and path.endswith(os.sep + "done"):
            continue  # queue/done is a directory, checked above
        problem = file_problem(st, path)
        if problem:
            problems.append(problem)
    if len(problems) > limit:
        problems[limit:] = [f"... and {len(problems) - limit} more like these"]
    return problems
