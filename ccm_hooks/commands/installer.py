"""``ccm-hooks install`` / ``uninstall``: the file side of editing Claude Code settings (spec/settings.md).

The edits themselves are pure functions in ``settings_merge``; this module finds the file, locks it,
keeps backups and the pre-install original, and writes atomically.
"""

from __future__ import annotations

import datetime
import difflib
import hashlib
import json
import os
import re
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from ccm_hooks import paths
from ccm_hooks.commands import settings_merge, shim
from ccm_hooks.errors import CcmError

SCOPES = ("project", "local", "user")
NEW_FILE_MODE = 0o644  # what Claude Code itself creates settings files with
KEEP_BACKUPS = 20
LOCK_TIMEOUT = 30.0  # seconds; an install takes milliseconds, so waiting this long means a stuck process
ORIGINAL = "original.json"
ORIGINAL_ABSENT = "original.absent"
_BACKUP_RE = re.compile(r"\d{8}T\d{6}\.\d{6}Z(-\d+)?\.json")


def settings_path(scope: str, project: Path) -> Path:
    """The settings file of ``scope``; ``project`` is only used for project and local scope."""
    if scope == "user":
        return Path(os.path.expanduser("~")) / ".claude" / "settings.json"
    if scope not in SCOPES:
        raise CcmError(f"unknown scope {scope!r}; use one of: {', '.join(SCOPES)}")
    root = Path(project).expanduser().resolve()
    if not root.is_dir():
        raise CcmError(f"project directory {root} does not exist; pass an existing one with --project")
    name = "settings.json" if scope == "project" else "settings.local.json"
    return root / ".claude" / name


def real_target(path: Path) -> Path:
    """The file whose bytes change: a settings file symlinked is edited at its target."""
    return Path(os.path.realpath(path))


def slug(target: Path) -> str:
    """A readable, collision-free file name for a settings file (letters, digits, dashes only).

    The hash keeps ``/a/b-c`` and ``/a/b/c`` apart; the readable part is clipped so the name stays short.
    """
    text = os.fspath(target)
    readable = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[-80:].lstrip("-")
    return f"{readable}-{hashlib.sha256(text.encode('utf-8', 'surrogateescape')).hexdigest()[:10]}"


def lock_path(state_root: str, target: Path) -> Path:
    return Path(paths.locks_dir(state_root)) / f"settings-{slug(target)}.lock"


def backup_dir(state_root: str, target: Path) -> Path:
    return Path(paths.backups_dir(state_root)) / slug(target)


@contextmanager
def settings_lock(state_root: str, target: Path) -> Iterator[None]:
    """Hold the lock serialising every change ccm makes to ``target`` (other tools may take it too)."""
    import filelock  # only the installer needs it; the hook handler must stay stdlib-only

    paths.ensure_dir(paths.locks_dir(state_root))
    lock = filelock.FileLock(os.fspath(lock_path(state_root, target)), timeout=LOCK_TIMEOUT, mode=0o600)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise CcmError(
            f"another ccm-hooks has held the lock on {target} for {LOCK_TIMEOUT:.0f}s "
            f"({lock.lock_file}); let it finish or stop it, then try again"
        ) from None
    try:
        yield
    finally:
        lock.release()


# --- reading and writing --------------------------------------------------------------------------


@dataclass
class Loaded:
    raw: bytes | None  # None: the file does not exist
    text: str
    doc: settings_merge.Settings


def _load(path: Path, target: Path, action: str) -> Loaded:
    try:
        raw: bytes | None = target.read_bytes()
    except FileNotFoundError:
        raw = None
    except IsADirectoryError:
        raise CcmError(
            f"{path} is a directory, not a settings file; move it aside, then run ccm-hooks {action} again"
        ) from None
    except OSError as exc:
        raise CcmError(
            f"cannot read {path}: {exc.strerror}; fix its permissions, then run ccm-hooks {action} again"
        ) from None
    if raw is None:
        return Loaded(None, "", {})
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CcmError(
            f"{path} is not UTF-8 text (byte {exc.start}); "
            f"fix it or move it aside, then run ccm-hooks {action} again"
        ) from None
    return Loaded(raw, text, settings_merge.parse(text, str(path), action))


def _atomic_write(target: Path, data: bytes, like: Path | None) -> None:
    """Replace ``target`` with ``data`` via a temp file in the same directory (so os.replace is atomic).

    Mode (and owner, when root edits someone else's file) come from the file being replaced.
    """
    try:
        st: os.stat_result | None = os.stat(like) if like is not None else None
    except FileNotFoundError:
        st = None
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".ccm-tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), stat.S_IMODE(st.st_mode) if st else NEW_FILE_MODE)
            if st is not None and os.geteuid() == 0:
                os.fchown(fh.fileno(), st.st_uid, st.st_gid)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still done
    finally:
        os.close(fd)


def _write_private(path: Path, data: bytes) -> None:
    paths.ensure_dir(os.fspath(path.parent))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)  # mkstemp already made it 0600: settings may hold tokens in "env"


def _backup(state_root: str, target: Path, raw: bytes) -> Path:
    """Copy ``raw`` to a new timestamped file, keep the newest ``KEEP_BACKUPS``; return its path."""
    bdir = backup_dir(state_root, target)
    paths.ensure_dir(os.fspath(bdir))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    dest = bdir / f"{stamp}.json"
    n = 0
    while dest.exists():  # two changes in one microsecond: keep both
        n += 1
        dest = bdir / f"{stamp}-{n}.json"
    _write_private(dest, raw)
    # Names sort in time order (fixed-width UTC stamps), so the oldest are first.
    backups = sorted(p for p in bdir.iterdir() if _BACKUP_RE.fullmatch(p.name))
    for old in backups[:-KEEP_BACKUPS]:
        old.unlink(missing_ok=True)
    return dest


@dataclass
class Original:
    raw: bytes | None  # None: the settings file did not exist before the first install
    created_dir: str | None  # a directory the first install created (only when raw is None)


def _save_original(state_root: str, target: Path, raw: bytes | None, created_dir: str | None) -> None:
    """Remember the content before the FIRST install; later installs keep the first record."""
    bdir = backup_dir(state_root, target)
    if (bdir / ORIGINAL).exists() or (bdir / ORIGINAL_ABSENT).exists():
        return
    if raw is not None:
        _write_private(bdir / ORIGINAL, raw)
        return
    if created_dir is None and _created_by_ccm(state_root, target.parent):
        # .claude/ made by the install of the sibling scope: whichever uninstall empties it removes it.
        created_dir = os.fspath(target.parent)
    _write_private(bdir / ORIGINAL_ABSENT, json.dumps({"created_dir": created_dir}).encode() + b"\n")


def _created_by_ccm(state_root: str, directory: Path) -> bool:
    for marker in Path(paths.backups_dir(state_root)).glob(f"*/{ORIGINAL_ABSENT}"):
        try:
            if json.loads(marker.read_text("utf-8")).get("created_dir") == os.fspath(directory):
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def _load_original(state_root: str, target: Path) -> Original | None:
    bdir = backup_dir(state_root, target)
    try:
        return Original((bdir / ORIGINAL).read_bytes(), None)
    except FileNotFoundError:
        pass
    try:
        info = json.loads((bdir / ORIGINAL_ABSENT).read_text("utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    created = info.get("created_dir") if isinstance(info, dict) else None
    return Original(None, created if isinstance(created, str) else None)


def _forget_original(state_root: str, target: Path) -> None:
    bdir = backup_dir(state_root, target)
    for name in (ORIGINAL, ORIGINAL_ABSENT):
        (bdir / name).unlink(missing_ok=True)


def _state_root() -> str:
    env = os.environ.get("CCM_HOME", "")
    if env and not os.path.isabs(env):
        # Hooks expand $CCM_HOME in the session's cwd, which moves: a relative one would point elsewhere.
        raise CcmError(f"CCM_HOME={env} is a relative path; set it to an absolute one")
    root = paths.state_dir()
    try:
        paths.ensure_layout(root)
    except OSError as exc:
        raise CcmError(f"cannot create state dir {root}: {exc.strerror}; fix it or set CCM_HOME") from None
    return root


def _print_diff(path: Path, old: str, new: str | None) -> None:
    """Print a unified diff (``new`` None: the file would be deleted), marking missing final newlines."""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        (new or "").splitlines(keepends=True),
        fromfile=str(path) if old or new is None else "/dev/null",
        tofile=str(path) if new is not None else "/dev/null",
    )
    for line in lines:
        sys.stdout.write(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")


def _write_error(path: Path, exc: OSError) -> CcmError:
    return CcmError(f"cannot write {path}: {exc.strerror}; fix the permissions of the file or its directory")


# --- commands -------------------------------------------------------------------------------------


def _install_text(loaded: Loaded) -> str | None:
    """The new file text, or None when the file already holds exactly our entries."""
    new_doc = settings_merge.install(loaded.doc)
    if loaded.raw is not None and new_doc == loaded.doc:
        return None
    return settings_merge.dumps(new_doc, settings_merge.detect_style(loaded.text))


def install_cmd(scope: str, project: Path, dry_run: bool) -> int:
    path = settings_path(scope, project)
    target = real_target(path)
    n = len(settings_merge.EVENTS)
    if dry_run:
        loaded = _load(path, target, "install")
        new_text = _install_text(loaded)
        if new_text is None:
            print(f"already installed in {path}, nothing to change")
        else:
            _print_diff(path, loaded.text if loaded.raw is not None else "", new_text)
            print(f"dry run: would install {n} hooks in {path}; nothing written", file=sys.stderr)
        return 0
    root = _state_root()
    with settings_lock(root, target):
        loaded = _load(path, target, "install")  # re-read under the lock: another writer may have been first
        new_text = _install_text(loaded)
        # The shim first: once the settings name it, a running claude (it re-reads settings) may exec it.
        try:
            shim_file = shim.write_shim(root)
        except OSError as exc:
            raise CcmError(
                f"cannot write the hook shim under {paths.bin_dir(root)}: {exc.strerror}; fix its permissions"
            ) from None
        print(f"wrote hook shim {shim_file} (python: {shim.current_python()})")
        if new_text is None:
            print(f"already installed in {path}, nothing to change")
            return 0
        created_dir: str | None = None
        try:
            if not target.parent.is_dir():
                target.parent.mkdir(parents=True)
                created_dir = os.fspath(target.parent)
            backup = _backup(root, target, loaded.raw) if loaded.raw is not None else None
            _save_original(root, target, loaded.raw, created_dir)
            _atomic_write(target, new_text.encode("utf-8"), target if loaded.raw is not None else None)
        except OSError as exc:
            raise _write_error(path, exc) from None
    if backup is None:
        print(f"created {path} with {n} ccm hooks")
    else:
        print(f"installed {n} ccm hooks in {path} (backup: {backup})")
    return 0


@dataclass
class _UninstallPlan:
    removed: int
    new_bytes: bytes | None  # None: delete the file
    how: str
    created_dir: str | None = None


def _plan_uninstall(root: str | None, target: Path, loaded: Loaded) -> _UninstallPlan:
    cleaned, removed = settings_merge.uninstall(loaded.doc)
    original = _load_original(root, target) if root is not None else None
    want = settings_merge.normalized(cleaned)
    if original is not None and original.raw is None and want == {}:
        how = "deleted it (it did not exist before install)"
        return _UninstallPlan(removed, None, how, original.created_dir)
    if original is not None and original.raw is not None:
        try:
            before = settings_merge.parse(original.raw.decode("utf-8"), "original", "uninstall")
        except (UnicodeDecodeError, CcmError):
            before = None
        if before is not None and settings_merge.normalized(before) == want:
            return _UninstallPlan(removed, original.raw, "restored it as it was before install")
    new_text = settings_merge.dumps(cleaned, settings_merge.detect_style(loaded.text))
    return _UninstallPlan(removed, new_text.encode("utf-8"), "kept everything else")


def uninstall_cmd(scope: str, project: Path, dry_run: bool) -> int:
    path = settings_path(scope, project)
    target = real_target(path)
    if dry_run:
        loaded = _load(path, target, "uninstall")
        root = paths.state_dir()
        if loaded.raw is None or not settings_merge.count_ours(loaded.doc):
            print(f"no ccm hooks in {path}, nothing to change")
            return 0
        plan = _plan_uninstall(root, target, loaded)
        _print_diff(path, loaded.text, None if plan.new_bytes is None else plan.new_bytes.decode("utf-8"))
        print(f"dry run: would remove {plan.removed} ccm hooks from {path}; nothing written", file=sys.stderr)
        return 0
    root = _state_root()
    with settings_lock(root, target):
        loaded = _load(path, target, "uninstall")
        if loaded.raw is None or not settings_merge.count_ours(loaded.doc):
            _forget_original(root, target)  # stale: the user removed our entries by hand
            print(f"no ccm hooks in {path}, nothing to change")
            return 0
        plan = _plan_uninstall(root, target, loaded)
        try:
            backup = _backup(root, target, loaded.raw)
            if plan.new_bytes is None:
                target.unlink()
                if plan.created_dir and Path(plan.created_dir) == target.parent:
                    with suppress(OSError):  # not empty: something else lives there now, keep it
                        target.parent.rmdir()
            else:
                _atomic_write(target, plan.new_bytes, target)
        except OSError as exc:
            raise _write_error(path, exc) from None
        _forget_original(root, target)
    print(f"removed {plan.removed} ccm hooks from {path}; {plan.how} (backup: {backup})")
    return 0
