"""``ccm-hooks install`` / ``uninstall``: the file side of editing Claude Code settings (spec/settings.md).

The edits themselves are pure functions in ``settings_merge`` (written back by splicing, so what ccm did
not change keeps its bytes); this module finds the file, locks it, keeps backups and the pre-install
original, and replaces it with ``statedir.editfile`` (regular files only, read-only respected, compare
and swap against programs that do not take our lock, such as Claude Code itself).
"""

from __future__ import annotations

import difflib
import os
import random
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ccm_hooks import paths
from ccm_hooks.commands import jsontext, settings_backup, settings_merge, shim
from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import editfile

SCOPES = ("project", "local", "user")
NEW_FILE_MODE = 0o644  # what Claude Code itself creates settings files with (less what the umask removes)
LOCK_TIMEOUT = 30.0  # seconds; an install takes milliseconds, so waiting this long means a stuck process
CONTENDED_S = 10.0  # give up when another program rewrites the file faster than we can swap, for this long
# A file that does not parse (or is empty) is read again after this, in case it was caught half-written.
SETTLE_S = 0.05


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


slug = settings_backup.slug
backup_dir = settings_backup.backup_dir


def lock_path(state_root: str, target: Path) -> Path:
    return Path(paths.locks_dir(state_root)) / f"settings-{slug(target)}.lock"


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
    snap: editfile.Snapshot
    text: str
    tree: jsontext.Tree | None  # None: no file, or only whitespace
    doc: settings_merge.Settings

    @property
    def raw(self) -> bytes | None:
        return self.snap.raw


def _label(path: Path, target: Path) -> str:
    return str(path) if path == target else f"{path} (a link to {target})"


def _read(path: Path, target: Path, action: str) -> editfile.Snapshot:
    again = f"then run ccm-hooks {action} again"
    try:
        return editfile.read(os.fspath(target))
    except editfile.NotRegular as exc:
        if exc.kind == "a directory":
            problem = "is a directory, not a settings file"
        else:
            problem = f"is {exc.kind}, not a regular file, so ccm-hooks will not read or replace it"
        raise CcmError(f"{_label(path, target)} {problem}; move it aside, {again}") from None
    except editfile.TooLarge as exc:
        raise CcmError(f"{exc}: that is not a settings file; move it aside, {again}") from None
    except OSError as exc:
        raise CcmError(f"cannot read {path}: {exc.strerror}; fix its permissions, {again}") from None


def _parse(path: Path, snap: editfile.Snapshot, action: str) -> Loaded:
    if snap.raw is None:
        return Loaded(snap, "", None, {})
    try:
        text = snap.raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CcmError(
            f"{path} is not UTF-8 text (byte {exc.start}); "
            f"fix it or move it aside, then run ccm-hooks {action} again"
        ) from None
    tree = settings_merge.parse_tree(text, str(path), action)
    return Loaded(snap, text, tree, {} if tree is None else tree.value)


def _load(path: Path, target: Path, action: str) -> Loaded:
    """Read and parse. A file that does not parse, or is empty, is read again after a moment and taken as
    it is only once it holds still: another program may have been caught halfway through writing it."""
    give_up = time.monotonic() + CONTENDED_S
    snap = _read(path, target, action)
    while True:
        error: CcmError | None = None
        try:
            loaded = _parse(path, snap, action)
            if snap.raw is None or snap.raw.strip():
                return loaded
        except CcmError as exc:
            error = exc
        time.sleep(SETTLE_S)
        again = _read(path, target, action)
        if again.unchanged(snap) or time.monotonic() > give_up:
            if error is not None:
                raise error
            return loaded
        snap = again


def _state_root() -> str:
    env = os.environ.get("CCM_HOME", "")
    if env and not os.path.isabs(env):
        # Hooks expand $CCM_HOME in the session's cwd, which moves: a relative one would point elsewhere.
        raise CcmError(f"CCM_HOME={env} is a relative path; set it to an absolute one")
    root = paths.state_dir()
    problem = shim.state_dir_problem(root)
    if problem is not None:
        raise CcmError(problem)
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


@dataclass
class _Plan:
    new_bytes: bytes | None  # None: delete the file
    how: str = ""  # for uninstall's message
    removed: int = 0
    created_dir: str | None = None  # uninstall: the directory to remove if the deletion empties it


def _render(path: Path, loaded: Loaded, doc: settings_merge.Settings, action: str) -> bytes:
    try:
        return settings_merge.render(doc, loaded.text, loaded.tree).encode("utf-8")
    except jsontext.CannotRoundTrip as exc:
        problem = settings_merge.cannot_round_trip(exc)
        raise CcmError(
            f"{path} {problem}; fix it or move it aside, then run ccm-hooks {action} again"
        ) from None


def _plan_install(path: Path, loaded: Loaded) -> _Plan | None:
    """The new bytes, or None when the file already holds exactly our entries."""
    new_doc = settings_merge.install(loaded.doc)
    if loaded.raw is not None and jsontext.same(new_doc, loaded.doc):
        return None
    return _Plan(_render(path, loaded, new_doc, "install"))


def _refuse_read_only(path: Path, target: Path, loaded: Loaded, action: str) -> None:
    found = editfile.read_only_reason(loaded.snap)
    if found is not None:
        reason, where = found
        raise CcmError(
            f"{_label(path, target)} {reason}, and ccm-hooks leaves read-only files alone: run "
            f"chmod u+w {shlex.quote(where)} and ccm-hooks {action} again, or make the change by hand "
            f"(ccm-hooks {action} --dry-run prints it)"
        )


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def _next_write(target: Path) -> None:
    """Wait (briefly) for the other writer's next write, so the retry starts right after one: a program
    that rewrites a file in a loop pauses after each write, and that pause is our best window."""

    def ident() -> tuple[int, ...]:
        try:
            st = os.lstat(target)
        except OSError:
            return ()
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    start = ident()
    deadline = time.monotonic() + random.uniform(0.05, 0.1)
    while time.monotonic() < deadline and ident() == start:
        time.sleep(0.001)


@dataclass
class _Done:
    loaded: Loaded  # what the file held when it was replaced
    plan: _Plan | None  # None: nothing to change
    backup: Path | None = None
    created_dir: str | None = None


def _edit(root: str, path: Path, target: Path, action: str, plan: Callable[[Loaded], _Plan | None]) -> _Done:
    """Read, plan, and swap the result in, again from the top whenever another program changed the file
    in the meantime (``editfile.Changed``), for at most ``CONTENDED_S`` seconds. The backup of what was
    replaced is written after the swap, to keep the read-to-swap window short."""
    give_up = time.monotonic() + CONTENDED_S
    created_dir: str | None = None  # kept across attempts: a retry finds the directory already there
    while True:
        loaded = _load(path, target, action)
        todo = plan(loaded)
        if todo is None:
            return _Done(loaded, None)
        _refuse_read_only(path, target, loaded, action)
        done = _Done(loaded, todo)
        try:
            if todo.new_bytes is None:
                editfile.remove(loaded.snap)
            else:
                if loaded.raw is None and not target.parent.is_dir():
                    target.parent.mkdir(mode=0o755, parents=True)  # as Claude's own, less the umask
                    created_dir = os.fspath(target.parent)
                done.created_dir = created_dir
                editfile.replace(loaded.snap, todo.new_bytes, NEW_FILE_MODE & ~_umask())
        except editfile.Changed:
            if time.monotonic() > give_up:
                raise CcmError(
                    f"{path} kept changing for {CONTENDED_S:.0f}s while ccm-hooks {action} tried to edit it "
                    f"(another program is rewriting it); run ccm-hooks {action} again when it is idle"
                ) from None
            _next_write(target)
            continue
        except editfile.Displaced as exc:
            kept = settings_backup.take(root, target, exc.data)
            raise CcmError(
                f"another program wrote {path} at the very moment ccm-hooks {action} replaced it; that "
                f"version is saved as {kept}: compare, then run ccm-hooks {action} again"
            ) from None
        except OSError as exc:
            raise _write_error(path, exc) from None
        if loaded.raw is not None:
            try:
                done.backup = settings_backup.take(root, target, loaded.raw)
            except OSError as exc:
                raise CcmError(
                    f"changed {path}, but could not keep a backup of it under {paths.backups_dir(root)}: "
                    f"{exc.strerror}"
                ) from None
        return done


def install_cmd(scope: str, project: Path, dry_run: bool) -> int:
    path = settings_path(scope, project)
    target = real_target(path)
    n = len(settings_merge.EVENTS)
    if dry_run:
        loaded = _load(path, target, "install")
        todo = _plan_install(path, loaded)
        if todo is None or todo.new_bytes is None:
            print(f"already installed in {path}, nothing to change")
        else:
            _print_diff(path, loaded.text if loaded.raw is not None else "", todo.new_bytes.decode("utf-8"))
            print(f"dry run: would install {n} hooks in {path}; nothing written", file=sys.stderr)
        return 0
    root = _state_root()
    with settings_lock(root, target):
        loaded = _load(path, target, "install")  # refuse what we cannot edit before writing anything
        if _plan_install(path, loaded) is not None:
            _refuse_read_only(path, target, loaded, "install")
        # The shim first: once the settings name it, a running claude (it re-reads settings) may exec it.
        try:
            shim_file = shim.write_shim(root)
        except OSError as exc:
            raise CcmError(
                f"cannot write the hook shim under {paths.bin_dir(root)}: {exc.strerror}; fix its permissions"
            ) from None
        print(f"wrote hook shim {shim_file} (python: {shim.current_python()})")
        done = _edit(root, path, target, "install", lambda loaded: _plan_install(path, loaded))
        if done.plan is None:
            print(f"already installed in {path}, nothing to change")
            return 0
        settings_backup.save_original(root, target, done.loaded.raw, done.created_dir)
    if done.backup is None:
        print(f"created {path} with {n} ccm hooks")
    else:
        print(f"installed {n} ccm hooks in {path} (backup: {done.backup})")
    return 0


def _plan_uninstall(root: str | None, path: Path, target: Path, loaded: Loaded) -> _Plan | None:
    if loaded.raw is None or not settings_merge.count_ours(loaded.doc):
        return None
    cleaned, removed = settings_merge.uninstall(loaded.doc)
    original = settings_backup.load_original(root, target) if root is not None else None
    want = settings_merge.normalized(cleaned)
    if original is not None and original.raw is None and want == {}:
        how = "deleted it (it did not exist before install)"
        return _Plan(None, how, removed, original.created_dir)
    if original is not None and original.raw is not None:
        try:
            before = settings_merge.parse(original.raw.decode("utf-8"), "original", "uninstall")
        except (UnicodeDecodeError, CcmError):
            before = None
        if before is not None and jsontext.same(settings_merge.normalized(before), want):
            return _Plan(original.raw, "restored it as it was before install", removed)
    return _Plan(_render(path, loaded, cleaned, "uninstall"), "kept everything else", removed)


def uninstall_cmd(scope: str, project: Path, dry_run: bool) -> int:
    path = settings_path(scope, project)
    target = real_target(path)
    if dry_run:
        loaded = _load(path, target, "uninstall")
        todo = _plan_uninstall(paths.state_dir(), path, target, loaded)
        if todo is None:
            print(f"no ccm hooks in {path}, nothing to change")
            return 0
        new = None if todo.new_bytes is None else todo.new_bytes.decode("utf-8")
        _print_diff(path, loaded.text, new)
        print(f"dry run: would remove {todo.removed} ccm hooks from {path}; nothing written", file=sys.stderr)
        return 0
    root = _state_root()
    with settings_lock(root, target):
        done = _edit(
            root, path, target, "uninstall", lambda loaded: _plan_uninstall(root, path, target, loaded)
        )
        settings_backup.forget_original(root, target)  # done, or stale: the user removed our entries by hand
        if done.plan is None:
            print(f"no ccm hooks in {path}, nothing to change")
            return 0
        if (
            done.plan.new_bytes is None
            and done.plan.created_dir
            and Path(done.plan.created_dir) == target.parent
        ):
            try:
                target.parent.rmdir()
            except OSError:
                pass  # not empty: something else lives there now, keep it
    print(f"removed {done.plan.removed} ccm hooks from {path}; {done.plan.how} (backup: {done.backup})")
    return 0
