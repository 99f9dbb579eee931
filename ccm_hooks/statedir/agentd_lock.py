"""ccm-agentd's lock (spec/agentd.md): ``agentd/agentd.lock``, flock(2)-ed by the daemon for its whole life
and holding its pid. The daemon takes it; ``ccm-agentd status`` and ``ccm-hooks doctor`` only ask whether it
is held, so both sides read it the same way."""

from __future__ import annotations

import fcntl
import os
import stat

from ccm_hooks import paths


def lock_path(root: str) -> str:
    return os.path.join(os.path.dirname(paths.agentd_health_path(root)), "agentd.lock")


def lock_held(root: str) -> bool:
    """Does a process hold ccm-agentd's lock for ``root``? (A shared lock would be refused.) Never blocks:
    a FIFO or anything else that is not a regular file there is "not held"."""
    try:
        fd = os.open(lock_path(root), os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False
