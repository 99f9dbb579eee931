"""The hook handler Claude Code runs for every registered event (``ccm-hook [EVENT]``, payload on stdin).

It sits on Claude's critical path, so: standard library only, one append and one rename, and it fails
open. Whatever happens (bad JSON, odd types, a session id that is not a plain id, an unusable state dir, a
full disk, a FIFO or another user's file where a file of ours belongs) it exits 0 and prints nothing;
problems go to ``$CCM_HOME/log/hooks.log`` when that can be written safely (the state dir and log/ are the
user's and private, hooks.log a regular file of theirs), else nowhere. An exit 2 or a stray line on stdout
would block the user's tool call or drop a decision.
"""

from __future__ import annotations

import os
import sys
import time

MAX_LOG_BYTES = 1 << 20  # hooks.log is rotated to hooks.log.1 past this


def main() -> int:
    started = time.time()  # first thing: the record's ts is when Claude started the hook
    # Nothing may reach stdout by accident: print() to a None stdout is a no-op. (A handler that must
    # answer Claude writes to fd 1 itself.)
    sys.stdout = None
    argv_event = sys.argv[1] if len(sys.argv) > 1 else None
    root = None
    payload = None
    try:
        from ccm_hooks import paths

        root = paths.state_dir()
        data = sys.stdin.buffer.read()
        payload = _parse(data)
        event = payload.get("hook_event_name")
        if not isinstance(event, str) or not event:
            event = argv_event
        if not event:
            raise ValueError("no hook_event_name in the payload and no event argument")
        if not paths.valid_session_id(payload.get("session_id")):
            raise ValueError(f"session_id is not a plain id: {str(payload.get('session_id'))[:80]!r}")
        if not isinstance(event, str) or len(event) > 64 or not event.isascii() or not event.isidentifier():
            raise ValueError(f"event name is not a plain name: {str(event)[:80]!r}")

        from ccm_hooks import record, store, watch

        _, _, decision, problems = store.record_event(
            root, payload, event, record.iso_utc(started), os.environ
        )
        for problem in problems:  # a bad config.toml or CCM_WATCH* value: worth a log line, not a failure
            _log_failure(root, argv_event, payload, ValueError(problem))
        answer = watch.block_output(decision)
        if answer is not None:
            # Watch mode continues the session: Claude reads this from stdout. It is the only output a
            # handler ever writes, after the decision is in the log (a crash before this line costs one
            # continue, never counts one twice).
            _write_all(1, answer)
    except BaseException as exc:
        _log_failure(root, argv_event, payload, exc)
    return 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _parse(data: bytes) -> dict[str, object]:
    from ccm_hooks import fastjson

    # Invalid UTF-8 is replaced rather than refused: the ids we need are ASCII, and the rest is best effort.
    obj = fastjson.loads(data.decode("utf-8", "replace"))
    if not isinstance(obj, dict):
        raise ValueError(f"payload is a JSON {type(obj).__name__}, not an object")
    return obj


def _log_failure(root: str | None, argv_event: str | None, payload: object, exc: BaseException) -> None:
    """One JSON line in log/hooks.log. Never raises: if even this fails, the event is silently dropped.

    Only into a state dir and log/ that are the user's (``paths.ensure_layout``) and a hooks.log that is
    a regular file of theirs (``fileio.open_regular``): a hijacked or FIFO log gets nothing, and nothing
    here can block.
    """
    try:
        import json
        import traceback

        from ccm_hooks import fileio, paths
        from ccm_hooks.record import iso_utc

        if root is None:
            root = paths.state_dir()
        session_id = payload.get("session_id") if isinstance(payload, dict) else None
        entry = {
            "ts": iso_utc(time.time()),
            "pid": os.getpid(),
            "event": argv_event,
            "session_id": session_id if paths.valid_session_id(session_id) else None,
            "error": f"{type(exc).__name__}: {exc}"[:2000],
            "where": "".join(traceback.format_tb(exc.__traceback__, limit=-3))[-2000:],
        }
        paths.ensure_layout(root, ("log",))
        log = paths.hooks_log_path(root)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        fd, st = fileio.open_regular_stat(log, flags, private=True)
        if st.st_size > MAX_LOG_BYTES:
            os.close(fd)
            os.replace(log, log + ".1")
            fd = fileio.open_regular(log, flags, private=True)
        try:
            fileio.write_all(fd, (json.dumps(entry, ensure_ascii=True) + "\n").encode("ascii"))
        finally:
            os.close(fd)
    except BaseException:
        pass


if __name__ == "__main__":
    sys.exit(main())
