"""Replacing a file that people and other programs edit too (Claude Code's settings, config.toml).

Four rules (spec/settings.md, "Files"):

- **Regular files only, never blocking.** The path is ``lstat``-ed first and opened with ``O_NONBLOCK``
  and ``O_NOFOLLOW``: a FIFO, socket, device or directory is refused without being opened for long.
- **Read-only means read-only.** A file whose owner has no write permission (``chmod a-w``), or one the
  caller may not write, is left alone even where ``rename(2)`` could replace it (which only needs the
  directory); so is a file in such a directory. Root is held to the same rule.
- **Compare and swap.** Another program (Claude Code itself) may rewrite the file between our read and
  our write without taking our lock. Right before the swap the file is compared with what was read
  (inode, size, mtime, bytes); if it changed, ``Changed`` tells the caller to read again and redo its
  edit. Where the system can swap two names atomically (Linux ``renameat2(RENAME_EXCHANGE)``, macOS
  ``renamex_np(RENAME_SWAP)``), the file swapped out is checked too, and put back if a write slipped in
  between the check and the swap: no version anyone wrote disappears unseen. Elsewhere a plain
  ``rename`` follows the check (a window of microseconds).
- **Nothing half-written.** The new content goes to a temp file in the same directory, is fsynced and
  takes the file's mode (and owner, when root edits someone else's file), then replaces the file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import signal
import stat
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from ccm_hooks.paths import file_kind

LINGER_S = 0.002  # how long a file taken off the path is watched for a late in-place write
MAX_BYTES = 16 << 20  # a settings file or config.toml is a few KiB; refuse to slurp anything huge


class NotRegular(Exception):
    """The path is not a regular file (``kind`` says what it is); nothing was opened for reading."""

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(f"{path} is {kind}, not a regular file")
        self.kind = kind


class TooLarge(Exception):
    pass


class Changed(Exception):
    """The file changed after it was read: read it again and redo the edit."""


class Displaced(Exception):
    """A version another program wrote in the same instant was taken off the path and could not be put
    back without dropping a newer one; ``data`` holds it so the caller can keep it somewhere."""

    def __init__(self, data: bytes) -> None:
        super().__init__("a concurrent write was displaced")
        self.data = data


@dataclass(frozen=True)
class Snapshot:
    """What a path held when read: ``raw`` None means there was no file."""

    path: str
    raw: bytes | None
    dev: int = 0
    ino: int = 0
    size: int = 0
    mtime_ns: int = 0
    mode: int = 0
    uid: int = -1
    gid: int = -1

    def same_file(self, other: Snapshot) -> bool:
        """Same inode, same bytes (what a swap hands back: rename changes only its ctime)."""
        return (self.raw, self.dev, self.ino) == (other.raw, other.dev, other.ino)

    def unchanged(self, other: Snapshot) -> bool:
        return self.same_file(other) and (self.size, self.mtime_ns) == (other.size, other.mtime_ns)


def read(path: str, max_bytes: int = MAX_BYTES) -> Snapshot:
    """Read ``path`` (no symlink followed). Raises NotRegular, TooLarge or OSError."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return Snapshot(path, None)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegular(path, file_kind(st.st_mode))
    # O_NONBLOCK: if a FIFO was swapped in after the lstat, open returns at once instead of waiting.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(path, file_kind(st.st_mode))
        if st.st_size > max_bytes:
            raise TooLarge(f"{path} is larger than {max_bytes >> 20} MiB")
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
            if sum(map(len, chunks)) > max_bytes:
                raise TooLarge(f"{path} is larger than {max_bytes >> 20} MiB")
    finally:
        os.close(fd)
    return Snapshot(
        path,
        b"".join(chunks),
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        st.st_mode,
        st.st_uid,
        st.st_gid,
    )


def read_only_reason(snap: Snapshot) -> tuple[str, str] | None:
    """Why the file must not be replaced, and the path to make writable (the file, or the directory it
    is or would be in); None if it may be replaced."""
    if snap.raw is not None:
        mode = stat.S_IMODE(snap.mode)
        if not mode & stat.S_IWUSR:
            return f"is read-only (mode {mode:04o})", snap.path
        if not os.access(snap.path, os.W_OK):
            return f"is not writable by you (mode {mode:04o}, owner uid {snap.uid})", snap.path
    directory = os.path.dirname(snap.path)
    while not os.path.isdir(directory) and os.path.dirname(directory) != directory:
        directory = os.path.dirname(directory)  # it will be created under the nearest existing one
    try:
        dmode = stat.S_IMODE(os.stat(directory).st_mode)
    except OSError:
        return None  # the write itself will say what is wrong
    if not dmode & stat.S_IWUSR or not os.access(directory, os.W_OK | os.X_OK):
        return f"is in a read-only directory ({directory}, mode {dmode:04o})", directory
    return None


def replace(snap: Snapshot, data: bytes, new_file_mode: int) -> None:
    """Make the path hold ``data`` iff it still holds ``snap``. Raises Changed, Displaced or OSError."""
    directory, name = os.path.split(snap.path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".ccm-tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), stat.S_IMODE(snap.mode) if snap.raw is not None else new_file_mode)
            if snap.raw is not None and os.geteuid() == 0:
                os.fchown(fh.fileno(), snap.uid, snap.gid)
            os.fsync(fh.fileno())
        if snap.raw is None:
            _create(tmp, snap.path)
        else:
            _swap_in(snap, tmp, data)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(directory)


def remove(snap: Snapshot) -> None:
    """Delete the path iff it still holds ``snap``. Raises Changed, Displaced or OSError."""
    directory, name = os.path.split(snap.path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".ccm-tmp")
    os.close(fd)
    try:
        with _Lease(snap.path) as lease:
            _check_unchanged(snap)
            os.replace(snap.path, tmp)  # take it off the path in one step, then look at what was taken
            if not _taken_intact(tmp, snap, lease):
                try:
                    os.link(tmp, snap.path)  # put it back, unless yet another file appeared there
                except FileExistsError:
                    raise Displaced(_read_any(tmp).raw or b"") from None
                raise Changed
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(directory)


def fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still done
    finally:
        os.close(fd)


def _check_unchanged(snap: Snapshot) -> None:
    try:
        now = read(snap.path)
    except (NotRegular, TooLarge, FileNotFoundError):
        raise Changed from None
    if not snap.unchanged(now):
        raise Changed


def _create(tmp: str, path: str) -> None:
    """Put ``tmp`` at ``path`` only if nothing is there (a hard link fails with EEXIST otherwise)."""
    if os.path.lexists(path):
        raise Changed
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise Changed from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if os.path.lexists(path):  # no hard links here (some FUSE and network filesystems)
            raise Changed from None
        os.replace(tmp, path)


def _swap_in(snap: Snapshot, tmp: str, data: bytes) -> None:
    with _Lease(snap.path) as lease:
        _check_unchanged(snap)
        if not exchange(tmp, snap.path):
            os.replace(tmp, snap.path)
            return
        # tmp holds what stood at the path an instant ago: it must be what we read, and nobody may be
        # about to write into it.
        if _taken_intact(tmp, snap, lease):
            return
        # A write slipped in: give that file its place back, then the caller redoes its edit on top of it.
        exchange(tmp, snap.path)
    back = _read_any(tmp)
    if back.raw != data:  # and yet another one in that instant: it must not vanish either
        raise Displaced(back.raw or b"")
    raise Changed


def _taken_intact(taken_at: str, snap: Snapshot, lease: _Lease) -> bool:
    """Is the file just taken off the path the one we read, and will it stay so?

    The second question is about programs that write in place (open, truncate, write: VS Code, Node's
    ``fs.writeFile``): one that opened the file before the swap would write into a file about to
    vanish. Where Linux leases work, the lease says so exactly; elsewhere the file is watched LINGER_S.
    """
    if not _read_any(taken_at).same_file(snap):
        return False
    if lease.held:
        return not lease.broken()
    time.sleep(LINGER_S)
    return _read_any(taken_at).same_file(snap)


class _Lease:
    """A Linux read lease (``fcntl(F_SETLEASE, F_RDLCK)``) on the file at ``path`` while a swap is decided.

    Taking it fails while anyone has the file open for writing (then: ``Changed``); once held, anyone
    opening it for writing is made to wait (at most until we let go, milliseconds later) and the lease
    shows a break. ``held`` is False where leases are unavailable (not Linux, not the file's owner
    without CAP_LEASE, a filesystem without them, not the main thread).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1
        self.held = False
        self._old_handler: Any = None

    def __enter__(self) -> _Lease:
        setlease = getattr(fcntl, "F_SETLEASE", None)
        if setlease is None or threading.current_thread() is not threading.main_thread():
            return self
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return self  # the check that follows says what changed
        # A break is announced with SIGIO, whose default action ends the process: ignore it.
        self._old_handler = signal.signal(signal.SIGIO, signal.SIG_IGN)
        try:
            fcntl.fcntl(self.fd, setlease, fcntl.F_RDLCK)
            self.held = True
        except OSError as exc:
            self._release()
            if exc.errno == errno.EAGAIN:  # open for writing by someone right now
                raise Changed from None
        return self

    def broken(self) -> bool:
        return bool(fcntl.fcntl(self.fd, fcntl.F_GETLEASE) != fcntl.F_RDLCK)

    def __exit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        if self.fd >= 0:
            if self.held:
                with contextlib.suppress(OSError):
                    fcntl.fcntl(self.fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
                self.held = False
            os.close(self.fd)
            self.fd = -1
        if self._old_handler is not None:
            signal.signal(signal.SIGIO, self._old_handler)
            self._old_handler = None


def _read_any(path: str) -> Snapshot:
    try:
        return read(path)
    except (NotRegular, TooLarge, FileNotFoundError):
        return Snapshot(path, None)


# --- swapping two names atomically ------------------------------------------------------------------

_RENAME_EXCHANGE = 2  # linux/fs.h
_RENAME_SWAP = 2  # macOS sys/stdio.h
_AT_FDCWD = -100
_swap_works: bool | None = None  # None: not tried yet


def exchange(a: str, b: str) -> bool:
    """Atomically swap the files at ``a`` and ``b``; False if this system or filesystem cannot."""
    global _swap_works
    if _swap_works is False:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if sys.platform == "darwin":
            rc = libc.renamex_np(os.fsencode(a), os.fsencode(b), ctypes.c_uint(_RENAME_SWAP))
        else:
            rc = libc.renameat2(
                _AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), ctypes.c_uint(_RENAME_EXCHANGE)
            )
    except (AttributeError, OSError):  # no such function in this C library
        _swap_works = False
        return False
    if rc == 0:
        _swap_works = True
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):  # kernel or filesystem
        return False
    raise OSError(err, os.strerror(err), a)
