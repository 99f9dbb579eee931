"""The one error boundary of the command-line tools (after pre-commit's error_handler)."""

from __future__ import annotations

import os
import sys

from ccm_hooks import paths
from ccm_hooks.errors import CcmError

TYPE_CHECKING = False  # the read commands start through here: no typing at run time (main.py says why)
if TYPE_CHECKING:
    from collections.abc import Callable

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_UNEXPECTED = 3
EXIT_INTERRUPTED = 130


def run_command(func: Callable[[], int], prog: str = "ccm-hooks") -> int:
    """Run one command; turn every failure into a one-line message and an exit code."""
    try:
        return func()
    except CcmError as exc:
        from ccm_hooks.statedir.safetext import one_line

        print(f"{prog}: {one_line(str(exc))}", file=sys.stderr)  # it may quote what a session wrote
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `ccm-hooks events | head`: the reader went away, which is not an error.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return EXIT_OK
    except Exception:
        where = _log_unexpected(prog)
        print(f"{prog}: unexpected error; details in {where}", file=sys.stderr)
        return EXIT_UNEXPECTED


def _log_unexpected(prog: str) -> str:
    import datetime
    import traceback

    root = paths.state_dir()
    log = os.path.join(paths.log_dir(root), "cli.log")
    try:
        paths.ensure_layout(root, ("log",))  # only what the log needs: status/ may be what failed
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, paths.FILE_MODE)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            fh.write(f"--- {now} {prog} {' '.join(sys.argv[1:])}\n{traceback.format_exc()}\n")
        return log
    except OSError:
        traceback.print_exc()
        return "the traceback above"


def in_home(func: Callable[[], int], write: bool = False) -> Callable[[], int]:
    """``func``, after checking that $CCM_HOME is a directory this user can use (one line if not)."""

    def call() -> int:
        from ccm_hooks import paths
        from ccm_hooks.statedir import home

        home.usable(paths.state_dir(), write=write)
        return func()

    return call
