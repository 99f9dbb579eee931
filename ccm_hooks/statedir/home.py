"""Can this state dir be used? One check that every command (``ccm-hooks`` and ``ccm-agentd``) runs first.

Without it, a ``$CCM_HOME`` that names a file, a FIFO or someone else's directory surfaces as a traceback
from whichever ``mkdir`` or ``open`` hits it first. Here it becomes one line saying what is wrong and how
to fix it (the CLIs print a ``CcmError`` and exit 1). Only ``lstat``/``stat``/``access`` calls: nothing is
opened, so a FIFO cannot block it.
"""

from __future__ import annotations

import os
import stat

from ccm_hooks.errors import CcmError
from ccm_hooks.paths import file_kind

# The directories ccm itself creates: a non-directory at one of these names breaks every command.
SUBDIRS = ("events", "status", "locks", "log")


def _where(root: str) -> str:
    """How the user named the state dir, so the fix names the right knob."""
    return f"$CCM_HOME ({root})" if os.environ.get("CCM_HOME") else f"the state dir {root}"


def usable(root: str, *, write: bool = False) -> None:
    """Raise ``CcmError`` unless ``root`` is (or can become) a state dir this user owns and can use.

    A missing root is fine: readers show nothing yet and writers create it, so only its nearest existing
    ancestor must be a directory. ``write``: the command will create or change files there.
    """
    where = _where(root)
    fix = "point CCM_HOME at a directory of yours (or unset it to use ~/.ccm)"
    try:
        st = os.stat(root)
    except FileNotFoundError:
        _check_ancestor(root, where, fix)
        return
    except NotADirectoryError:
        _check_ancestor(root, where, fix)
        return
    except PermissionError:
        raise CcmError(f"cannot reach {where}: permission denied on a directory above it; {fix}") from None
    except OSError as exc:
        raise CcmError(f"cannot use {where}: {exc.strerror}; {fix}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise CcmError(f"{where} is {file_kind(st.st_mode)}, not a directory; {fix}")
    if st.st_uid != os.geteuid():
        raise CcmError(
            f"{where} belongs to uid {st.st_uid}, not to you (uid {os.geteuid()}); ccm does not act on a "
            f"state dir another user controls: {fix}"
        )
    want = os.R_OK | os.X_OK | (os.W_OK if write else 0)
    if not os.access(root, want, effective_ids=os.access in os.supports_effective_ids):
        need = "read, write and enter" if write else "read and enter"
        raise CcmError(f"cannot {need} {where}: permission denied; run `chmod 700 {root}`")
    for sub in SUBDIRS:
        path = os.path.join(root, sub)
        try:
            sub_st = os.stat(path)
        except FileNotFoundError:
            continue  # created on demand
        except OSError as exc:
            raise CcmError(f"cannot use {path}: {exc.strerror}; {fix}") from None
        if not stat.S_ISDIR(sub_st.st_mode):
            raise CcmError(
                f"{path} is {file_kind(sub_st.st_mode)} where ccm keeps a directory; move it out of the way "
                "(the next hook event recreates the directory)"
            )
        if not os.access(path, want, effective_ids=os.access in os.supports_effective_ids):
            raise CcmError(f"cannot read {path}: permission denied; run `chmod 700 {path}`")


def _check_ancestor(root: str, where: str, fix: str) -> None:
    parent = os.path.dirname(root)
    while parent and parent != os.path.dirname(parent):
        try:
            st = os.stat(parent)
        except (FileNotFoundError, NotADirectoryError):
            parent = os.path.dirname(parent)
            continue
        except OSError as exc:
            raise CcmError(f"cannot use {where}: {exc.strerror} at {parent}; {fix}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise CcmError(f"{where} is inside {parent}, which is {file_kind(st.st_mode)}; {fix}")
        return
