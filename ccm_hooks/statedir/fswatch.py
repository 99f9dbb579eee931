"""Wait for changes in a few directories without polling: inotify on Linux, watchfiles (FSEvents,
kqueue, ...) elsewhere. Watchers can drop events (queue overflow, network filesystems), so callers still
rescan now and then; ``wait`` returning False only means "nothing seen before the timeout".

Both backends offer a descriptor that is readable while changes are pending, so callers ``select`` on it
together with their own input (a terminal, a signal wake-up pipe) and time out exactly when they need to.
watchfiles has no descriptor of its own: a thread runs its watch loop and writes a byte into a pipe per
batch of changes. ``CCM_WATCHER=watchfiles`` picks that backend on Linux too (the tests use it).

Callers that must do work proportional to what changed ask ``take()`` which names changed in which
directory since they last asked; ``overflow`` says the watcher lost events and everything must be looked at.
"""

from __future__ import annotations

import os
import select
import sys
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

BACKENDS = ("inotify", "watchfiles")
MAX_NAMES = 100_000  # past this many distinct names between two take()s, report an overflow instead


@dataclass
class Changes:
    """What changed since the last ``take()``: directory -> file names, and whether events were lost."""

    names: dict[str, set[str]] = field(default_factory=dict)
    overflow: bool = False

    def __bool__(self) -> bool:
        return self.overflow or bool(self.names)

    def add(self, directory: str, name: str) -> None:
        if self.overflow:
            return
        names = self.names.setdefault(directory, set())
        names.add(name)
        if len(names) > MAX_NAMES:
            self.lost()

    def lost(self) -> None:
        self.overflow = True
        self.names.clear()


def default_backend() -> str:
    chosen = os.environ.get("CCM_WATCHER", "")
    if chosen in BACKENDS:
        return chosen
    return "inotify" if sys.platform.startswith("linux") else "watchfiles"


class DirWatcher:
    """``wait(timeout)`` blocks until something in ``dirs`` is created, written, renamed or deleted."""

    def __init__(self, dirs: list[str], backend: str | None = None) -> None:
        self.dirs = [d for d in dirs if os.path.isdir(d)]
        self.backend = backend or default_backend()
        self._inotify: Any = None
        self._pipe: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending = Changes()
        self._lock = threading.Lock()  # the watchfiles thread adds to _pending
        self._wds: dict[int, str] = {}
        if self.backend == "inotify":
            from inotify_simple import INotify
            from inotify_simple import flags as f

            self._inotify = INotify()
            self._overflow_mask = int(f.Q_OVERFLOW)
            mask = f.CLOSE_WRITE | f.MOVED_TO | f.CREATE | f.DELETE | f.MODIFY | f.MOVED_FROM
            for d in self.dirs:
                self._wds[self._inotify.add_watch(d, mask)] = d
        else:
            self._pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            if self.dirs:
                self._thread = threading.Thread(target=self._pump, name="ccm-watchfiles", daemon=True)
                self._thread.start()

    def _pump(self) -> None:
        """The watchfiles loop, in its thread: one byte into the pipe per batch of changes."""
        import watchfiles

        assert self._pipe is not None
        # No filter (the default one skips editor temp files, and ours are temp files renamed into place);
        # a short debounce, since callers react to single writes. watchfiles' loop wakes every `step` ms
        # (to check signals and the stop event): 50 ms costs ccm-agentd 0.17% of a core at rest, 10 ms
        # 0.47% (bench/agentd_idle.py with CCM_WATCHER=watchfiles), for about 20 ms more delay.
        for batch in watchfiles.watch(
            *self.dirs, watch_filter=None, debounce=20, step=50, stop_event=self._stop, raise_interrupt=False
        ):
            with self._lock:
                for _, path in batch:
                    self._pending.add(*self._split(path))
            try:
                os.write(self._pipe[1], b"!")
            except BlockingIOError:
                pass  # the pipe is full of wake-ups already: one more adds nothing

    def _split(self, path: str) -> tuple[str, str]:
        """(watched dir as given, name) for a path watchfiles reports (it may resolve symlinks)."""
        directory, name = os.path.split(path)
        if directory not in self.dirs:
            real = os.path.realpath(directory)
            directory = next((d for d in self.dirs if os.path.realpath(d) == real), directory)
        return directory, name

    def wait(self, timeout: float) -> bool:
        """True if a change was seen within ``timeout`` seconds. Drains everything pending."""
        if self._inotify is not None:
            events = self._inotify.read(timeout=int(timeout * 1000), read_delay=None)
            for event in events:
                if event.mask & self._overflow_mask:
                    self._pending.lost()
                elif event.wd in self._wds and event.name:
                    self._pending.add(self._wds[event.wd], event.name)
            return bool(events)
        assert self._pipe is not None
        ready, _, _ = select.select([self._pipe[0]], [], [], max(0.0, timeout))
        if not ready:
            return False
        try:
            while os.read(self._pipe[0], 4096):
                pass
        except BlockingIOError:
            pass
        return True

    def take(self) -> Changes:
        """The names changed since the last ``take()`` (as seen by ``wait``), and forget them."""
        with self._lock:
            taken, self._pending = self._pending, Changes()
        return taken

    def fileno(self) -> int:
        """Readable while changes are pending; then ``wait(0)`` drains it."""
        if self._inotify is not None:
            return int(self._inotify.fileno())
        assert self._pipe is not None
        return self._pipe[0]

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                return  # still able to write: leave it the pipe rather than close a descriptor in use
            self._thread = None
        if self._pipe is not None:
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None

    def __enter__(self) -> DirWatcher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
