"""Wait for changes in a few directories without polling: inotify on Linux, watchfiles (FSEvents,
kqueue, ...) elsewhere. Watchers can drop events (queue overflow, network filesystems), so callers still
rescan now and then; ``wait`` returning False only means "nothing seen before the timeout".
"""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Any


class DirWatcher:
    """``wait(timeout)`` blocks until something in ``dirs`` is created, written, renamed or deleted."""

    def __init__(self, dirs: list[str]) -> None:
        self.dirs = [d for d in dirs if os.path.isdir(d)]
        self._inotify: Any = None
        self._watch: Any = None
        if sys.platform.startswith("linux"):
            from inotify_simple import INotify
            from inotify_simple import flags as f

            self._inotify = INotify()
            mask = f.CLOSE_WRITE | f.MOVED_TO | f.CREATE | f.DELETE | f.MODIFY
            for d in self.dirs:
                self._inotify.add_watch(d, mask)
        else:
            self._watch = None  # created lazily: watchfiles starts a thread per watch

    def wait(self, timeout: float) -> bool:
        """True if a change was seen within ``timeout`` seconds. Drains everything pending."""
        if self._inotify is not None:
            events = self._inotify.read(timeout=int(timeout * 1000), read_delay=None)
            return bool(events)
        if not self.dirs:
            import time

            time.sleep(timeout)
            return False
        if self._watch is None:
            import watchfiles

            self._watch = watchfiles.watch(
                *self.dirs, yield_on_timeout=True, rust_timeout=max(1, int(timeout * 1000)), debounce=50
            )
        return bool(next(self._watch, set()))

    def fileno(self) -> int | None:
        """The inotify descriptor, readable while events are pending, for callers that ``select`` on it
        together with other input (then ``wait(0)`` drains it); None where there is no inotify."""
        return None if self._inotify is None else int(self._inotify.fileno())

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def __enter__(self) -> DirWatcher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
