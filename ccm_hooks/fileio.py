"""The state dir's file primitives: the one place its rules live (spec/layout.md#files-ccm-opens).

1. Open nothing that is not a regular file, and never block in ``open``: every open adds
   ``O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC``, ``fstat``s the fd and refuses a FIFO, socket,
   device, directory or symlink (``UnsafePath``) before a byte moves; then ``O_NONBLOCK`` is cleared.
2. ``private=True``: refuse a file owned by another user or writable by group or others. Directories are
   checked by ``paths.ensure_private_dir`` / ``paths.ensure_layout``.
3. Temp files are ``O_CREAT | O_EXCL | O_NOFOLLOW`` under an unpredictable name, and removed on any failure.
4. Reads are bounded: whole-file reads by size; logs are streamed (``jsonl``).

Standard library only (the handler imports this on every call), and lean: no ``contextlib`` (the lock is a
plain class), ``_signal`` rather than ``signal`` (whose enum wrappers cost 5 ms to import), ``fastjson``
rather than ``json``.
"""

from __future__ import annotations

import _signal as signal  # the C module under `signal`: same functions, without importing enum
import errno
import fcntl
import os
import time

from ccm_hooks import fastjson
from ccm_hooks.paths import FILE_MODE, UnsafePath, file_problem

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs ~3 ms per hook call
if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import FrameType, TracebackType
    from typing import Any

__all__ = ["UnsafePath"]  # re-exported: callers catch fileio.UnsafePath

# O_NOCTTY: a terminal device planted here must not become the handler's controlling terminal on open.
_OPEN_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
# errno values an open of something that is not a regular file can fail with: ELOOP/EMLINK (O_NOFOLLOW on a
# symlink, Linux/BSD), ENXIO (a FIFO without reader opened O_NONBLOCK for writing; a socket), EISDIR,
# EOPNOTSUPP (a socket, macOS), ENODEV (a device without driver).
_NOT_A_FILE_ERRNOS = frozenset(
    {errno.ELOOP, errno.EMLINK, errno.ENXIO, errno.EISDIR, errno.EOPNOTSUPP, errno.ENODEV}
)
MAX_WHOLE_FILE = 8 << 20  # read_json/read_bytes refuse larger files: ccm's own are KBs
TEMP_SUFFIX = ".tmp"
STALE_TEMP_S = 60.0  # a temp file older than this belongs to a writer that died (spec/layout.md#temp-files)
_TEMP_ATTEMPTS = 16


# --- opening -------------------------------------------------------------------------------------------


def open_regular_stat(
    path: str, flags: int, *, private: bool, mode: int = FILE_MODE
) -> tuple[int, os.stat_result]:
    """``open_regular``, also returning the fd's ``fstat`` (callers often need the size)."""
    try:
        fd = os.open(path, flags | _OPEN_FLAGS, mode)
    except OSError as exc:
        if exc.errno in _NOT_A_FILE_ERRNOS:
            try:
                problem = file_problem(os.lstat(path), path, private=False)
            except OSError:
                problem = None
            if problem:
                raise UnsafePath(problem) from None
        raise
    try:
        st = os.fstat(fd)
        problem = file_problem(st, path, private)
        if problem:
            raise UnsafePath(problem)
        if not flags & os.O_NONBLOCK:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def open_regular(path: str, flags: int, *, private: bool, mode: int = FILE_MODE) -> int:
    """Open ``path`` with ``flags`` (``os.O_*``; ``O_CREAT`` creates it with ``mode``), or raise.

    Never blocks in ``open`` and never follows a symlink in the last component: it adds ``O_NOFOLLOW``,
    ``O_NONBLOCK``, ``O_NOCTTY`` and ``O_CLOEXEC``, ``fstat``s the fd, and raises ``UnsafePath`` (an
    OSError, and a CcmError whose message says what is wrong and how to fix it) unless it is a regular
    file; with ``private`` also unless it is owned by the effective user and not writable by group or
    others (pass ``private=True`` for everything in the state dir). Then ``O_NONBLOCK`` is cleared
    (unless ``flags`` asked for it), so reads, writes and ``flock`` behave as usual. Other failures are
    the usual OSErrors (FileNotFoundError, ...). The caller closes the fd.
    """
    return open_regular_stat(path, flags, private=private, mode=mode)[0]


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_fd(fd: int, size: int, max_bytes: int, path: str) -> bytes:
    """The whole content of ``fd`` (of ``fstat`` size ``size``), refusing more than ``max_bytes``."""
    if size > max_bytes:
        raise ValueError(f"{path} is {size} bytes, more than the {max_bytes} ccm reads")
    parts: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, max(size - total, 0) + 1)  # +1: see EOF (or growth) without a second call
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise ValueError(f"{path} grew past the {max_bytes} bytes ccm reads")


def read_bytes(path: str, *, private: bool = True, max_bytes: int = MAX_WHOLE_FILE) -> bytes | None:
    """The content of regular file ``path``, or None if it does not exist.

    Raises UnsafePath (see ``open_regular``), ValueError if it is larger than ``max_bytes``, OSError.
    """
    try:
        fd, st = open_regular_stat(path, os.O_RDONLY, private=private)
    except FileNotFoundError:
        return None
    try:
        return read_fd(fd, st.st_size, max_bytes, path)
    finally:
        os.close(fd)


def read_json(path: str, *, private: bool = True, max_bytes: int = MAX_WHOLE_FILE) -> Any:
    """The parsed JSON file ``path``, or None if it does not exist.

    Raises UnsafePath, ValueError (not JSON, not UTF-8, larger than ``max_bytes``), OSError.
    """
    data = read_bytes(path, private=private, max_bytes=max_bytes)
    return None if data is None else fastjson.loads(data)


# --- the lock ------------------------------------------------------------------------------------------


class LockTimeout(Exception):
    pass


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise LockTimeout("timed out waiting for the session lock")


class FileLock:
    """A ``flock(2)`` on ``path`` (opened with ``open_regular``, created 0600 if missing), released when
    the fd closes, so also when the process dies. Use as a context manager.

    ``shared``: ``LOCK_SH`` on the file opened read-only (not created: FileNotFoundError if missing), for
    readers that want a consistent view for milliseconds; otherwise ``LOCK_EX``. ``timeout`` (seconds):
    LockTimeout after that long; in the main thread through SIGALRM (no polling: a contended lock is
    granted at once), in other threads by polling every 5 ms. Raises UnsafePath if the lock file is not a
    regular file (or, with ``private``, not the user's): a FIFO here must not hang a hook.
    """

    def __init__(
        self, path: str, timeout: float | None = None, *, shared: bool = False, private: bool = True
    ) -> None:
        self.path = path
        self.timeout = timeout
        self.shared = shared
        self.private = private
        self.fd = -1

    def __enter__(self) -> FileLock:
        flags = os.O_RDONLY if self.shared else os.O_RDWR | os.O_CREAT
        self.fd = open_regular(self.path, flags, private=self.private)
        op = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        try:
            if self.timeout:
                self._lock_within(op, self.timeout)
            else:
                fcntl.flock(self.fd, op)
        except BaseException:
            os.close(self.fd)
            self.fd = -1
            raise
        return self

    def _lock_within(self, op: int, timeout: float) -> None:
        try:
            previous = signal.signal(signal.SIGALRM, _on_alarm)
        except ValueError:  # not the main thread: poll
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(self.fd, op | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LockTimeout(f"timed out waiting for {self.path}") from None
                    time.sleep(0.005)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            fcntl.flock(self.fd, op)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# --- writing -------------------------------------------------------------------------------------------


def encode_line(obj: Any) -> bytes:
    """Compact JSON plus newline, UTF-8, readable non-ASCII.

    A lone surrogate (valid in JSON input, invalid in UTF-8) becomes a ``\\udXXX`` escape, which is
    itself valid JSON, so the line stays parseable by jq whatever the payload held.
    """
    text = fastjson.dumps(obj)
    return text.encode("utf-8", "backslashreplace") + b"\n"


def append_fd(fd: int, line: bytes) -> None:
    """Append one whole line to ``fd`` (opened ``O_RDWR | O_APPEND``) with one ``write(2)``.

    The caller holds the lock that serialises this file's writers, so lines longer than PIPE_BUF cannot
    interleave either. If a previous writer died mid-line (disk full, kill -9), its torn line is
    terminated first, so this record stays whole.
    """
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        line = b"\n" + line
    write_all(fd, line)


def append_line(path: str, line: bytes, *, private: bool = True) -> None:
    """``append_fd`` on ``path``, opened with ``open_regular`` (created 0600 if missing)."""
    # O_RDWR, not O_WRONLY: the torn-line check preads the last byte.
    fd = open_regular(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, private=private)
    try:
        append_fd(fd, line)
    finally:
        os.close(fd)


def temp_name(name: str) -> str:
    """A fresh temp file name for ``name`` in the same directory: ``.<name>.<16 hex chars>.tmp``."""
    return f".{name}.{os.urandom(8).hex()}{TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    """True for the temp files of ``atomic_write`` (also the older ``.<name>.<pid>.tmp`` form)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def atomic_write(path: str, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data``: readers see the old file or the new one, never a part.

    The temp file lives in the same directory (``os.replace`` is only atomic within a filesystem), is
    created ``O_CREAT | O_EXCL | O_NOFOLLOW`` with ``mode`` under an unpredictable name (``temp_name``; a
    new name on EEXIST), so nothing planted there (a hard link, a symlink, a FIFO) is ever opened, and is
    removed again if anything fails (a full disk leaves no empty temp file). ``path`` itself is never
    opened: whatever was there (even a FIFO) is replaced. It starts with a dot, so globs skip it. No
    fsync: this protects against a killed writer, not a power cut, and an fsync would cost more than the
    whole rest of a hook call. A writer killed between create and rename leaves a temp file behind:
    ``clean_stale_temps`` removes those.
    """
    directory, name = os.path.split(path)
    for _ in range(_TEMP_ATTEMPTS):
        tmp = os.path.join(directory, temp_name(name))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(errno.EEXIST, f"no free temp file name next to {path}")
    try:
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def stale_temp_files(directory: str, older_than: float = STALE_TEMP_S, now: float | None = None) -> list[str]:
    """Paths of the temp files (``is_temp_name``) in ``directory`` last modified more than ``older_than``
    seconds ago: left by writers that died between create and rename. One ``scandir`` and one ``lstat``
    per temp file; never for the hot path. A missing directory has none."""
    now = time.time() if now is None else now
    found: list[str] = []
    try:
        entries = os.scandir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return found
    with entries:
        for entry in entries:
            if not is_temp_name(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if now - st.st_mtime > older_than and not entry.is_dir(follow_symlinks=False):
                found.append(entry.path)
    return found


def clean_stale_temps(directory: str, older_than: float = STALE_TEMP_S) -> int:
    """Remove ``stale_temp_files(directory, older_than)``; the number removed. For ccm-agentd's periodic
    rescan and ``ccm-hooks prune`` (spec/layout.md#temp-files says who cleans what)."""
    removed = 0
    for path in stale_temp_files(directory, older_than):
        try:
            os.unlink(path)
            removed += 1
        except OSError:
            pass
    return removed


# --- reading logs --------------------------------------------------------------------------------------


def parse_record(line: bytes) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        obj = fastjson.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def iter_lines(data: bytes) -> Iterator[tuple[int, Any]]:
    """(end offset, record) for each complete, parseable line of ``data`` (in memory).

    A last line without its newline is a write in progress (or torn by a crash): it is not yielded, and the
    offsets let a follower resume exactly there. Lines that do not parse as a JSON object are skipped.
    """
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            return
        obj = parse_record(data[start:end])
        start = end + 1
        if obj is not None:
            yield start, obj
