"""Crash-safe file primitives: a lock, a whole-line append, an atomic replace, torn-line-tolerant reads.

Standard library only (the handler imports this on every call), and lean: no ``contextlib`` (the lock is a
plain class), ``_signal`` rather than ``signal`` (whose enum wrappers cost 5 ms to import), ``fastjson``
rather than ``json``.
"""

from __future__ import annotations

import _signal as signal  # the C module under `signal`: same functions, without importing enum
import fcntl
import os

from ccm_hooks import fastjson
from ccm_hooks.paths import FILE_MODE

TYPE_CHECKING = False  # not `from typing import ...`: importing typing costs ~3 ms per hook call
if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import FrameType, TracebackType
    from typing import Any

_OPEN_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW


class LockTimeout(Exception):
    pass


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise LockTimeout("timed out waiting for the session lock")


class FileLock:
    """An exclusive ``flock(2)`` on ``path``, released when the fd closes (so also when the process dies).

    ``timeout`` uses SIGALRM and so only works in the main thread; the handler is single-threaded.
    """

    def __init__(self, path: str, timeout: float | None = None) -> None:
        self.path = path
        self.timeout = timeout
        self.fd = -1

    def __enter__(self) -> FileLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, FILE_MODE)
        try:
            if self.timeout:
                previous = signal.signal(signal.SIGALRM, _on_alarm)
                signal.setitimer(signal.ITIMER_REAL, self.timeout)
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    signal.signal(signal.SIGALRM, previous)
            else:
                fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        os.close(self.fd)


def encode_line(obj: Any) -> bytes:
    """Compact JSON plus newline, UTF-8, readable non-ASCII.

    A lone surrogate (valid in JSON input, invalid in UTF-8) becomes a ``\\udXXX`` escape, which is
    itself valid JSON, so the line stays parseable by jq whatever the payload held.
    """
    text = fastjson.dumps(obj)
    return text.encode("utf-8", "backslashreplace") + b"\n"


def append_line(path: str, line: bytes) -> None:
    """Append one whole line with a single O_APPEND write.

    Callers hold the session lock, so lines longer than PIPE_BUF cannot interleave either. If a previous
    writer died mid-line (disk full, kill -9), terminate its torn line first so this record stays whole.
    """
    # O_RDWR, not O_WRONLY: the torn-line check preads the last byte.
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | _OPEN_FLAGS, FILE_MODE)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        view = memoryview(line)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data``: readers see the old file or the new one, never a part.

    The temp file lives in the same directory (``os.replace`` is only atomic within a filesystem) and
    starts with a dot so directory listings and globs skip it. No fsync: this protects against a killed
    writer, not a power cut, and an fsync would cost more than the whole rest of a hook call.
    """
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _OPEN_FLAGS, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_json(path: str) -> Any:
    """The parsed file, or None if it does not exist. Other errors propagate."""
    try:
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as fh:
        return fastjson.loads(fh.read())


def iter_lines(data: bytes) -> Iterator[tuple[int, Any]]:
    """(end offset, record) for each complete, parseable line of ``data``.

    A last line without its newline is a write in progress (or torn by a crash): it is not yielded, and the
    offsets let a follower resume exactly there. Lines that do not parse as a JSON object are skipped.
    """
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            return
        line = data[start:end]
        start = end + 1
        if not line.strip():
            continue
        try:
            obj = fastjson.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            yield start, obj


def last_record(path: str, chunk: int = 65536) -> dict[str, Any] | None:
    """The last complete record of a JSONL file, reading backwards from the end in growing chunks."""
    try:
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        while True:
            start = max(0, size - chunk)
            data = os.pread(fd, size - start, start)
            if start > 0:
                # The first line may be cut by the chunk boundary: keep only what follows a newline.
                cut = data.find(b"\n")
                data = data[cut + 1 :] if cut >= 0 else b""
            found = None
            for _, obj in iter_lines(data):
                found = obj
            if found is not None or start == 0:
                return found
            chunk *= 4
    finally:
        os.close(fd)
