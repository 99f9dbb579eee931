#!/usr/bin/env python3
"""Realistic state dirs at scale, in the handler's exact formats, fast enough for 500 MB logs.

Every record is built by the handler's own code (``record.build_record`` on the captured payloads in
tests/fixtures/payloads, encoded by ``fileio.encode_line``), once per kind of turn; the generator then
repeats those lines with ``seq``, ``ts`` and the tool-use ids filled in (a bytes replace, ~1 µs a record
instead of the ~15 ms a handler process takes). Statuses are ``state.apply`` folds: of every record up to
``exact_limit`` records; beyond that, of the first turn, then of the last one on the counters and seq of
everything before it, which gives the same status for these repeating turns (tests/test_statedir_gen.py
compares the two).

    python bench/statedir_gen.py DIR --sessions 1000 --records 200         # 1,000 sessions
    python bench/statedir_gen.py DIR --log-mb 500                          # one session, a 500 MB log

As a library (other benches use it)::

    from bench.statedir_gen import write_statedir, write_session, write_log_of_size
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ccm_hooks import fastjson, fileio, paths, record, state  # noqa: E402

PAYLOADS = REPO / "tests" / "fixtures" / "payloads"
PROJECT = "/home/dev/work/proj"
ENV = {"CLAUDE_PROJECT_DIR": PROJECT}
_SEQ, _TS, _TURN = "@@SEQ@@", "@@TS@@", "@@TURN@@"
# The turns a session repeats: (event, fixture, changes). Tool ids carry the turn number so each
# PostToolUse answers its own PreToolUse.
TURNS: list[list[tuple[str, str, dict[str, Any]]]] = [
    [
        ("UserPromptSubmit", "UserPromptSubmit__p", {}),
        ("PreToolUse", "PreToolUse__Read", {"tool_use_id": f"toolu_{_TURN}_1"}),
        ("PostToolUse", "PostToolUse__Read", {"tool_use_id": f"toolu_{_TURN}_1"}),
        ("PreToolUse", "PreToolUse__Bash", {"tool_use_id": f"toolu_{_TURN}_2"}),
        ("PostToolUse", "PostToolUse__Bash", {"tool_use_id": f"toolu_{_TURN}_2"}),
        ("Stop", "Stop__first", {}),
    ],
    [
        ("UserPromptSubmit", "UserPromptSubmit__interactive_continue", {}),
        ("PreToolUse", "PreToolUse__Edit", {"tool_use_id": f"toolu_{_TURN}_1"}),
        ("PostToolUse", "PostToolUse__Edit", {"tool_use_id": f"toolu_{_TURN}_1"}),
        ("PreToolUse", "PreToolUse__Bash", {"tool_use_id": f"toolu_{_TURN}_2"}),
        ("PostToolUseFailure", "PostToolUseFailure__Bash_exit3", {"tool_use_id": f"toolu_{_TURN}_2"}),
        ("PreToolUse", "PreToolUse__Write", {"tool_use_id": f"toolu_{_TURN}_3"}),
        ("PostToolUse", "PostToolUse__Write", {"tool_use_id": f"toolu_{_TURN}_3"}),
        ("Stop", "Stop__after_block", {}),
    ],
    [
        ("UserPromptSubmit", "UserPromptSubmit__p", {}),
        ("PreToolUse", "PreToolUse__Bash", {"tool_use_id": f"toolu_{_TURN}_1"}),
        ("PostToolUse", "PostToolUse__Bash", {"tool_use_id": f"toolu_{_TURN}_1"}),
        ("Notification", "Notification__idle_prompt", {}),
        ("Stop", "Stop__first", {}),
    ],
]
START: list[tuple[str, str, dict[str, Any]]] = [("SessionStart", "SessionStart__startup_p", {})]
END: list[tuple[str, str, dict[str, Any]]] = [("SessionEnd", "SessionEnd__prompt_input_exit", {})]


def _payload(name: str, session_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PAYLOADS / f"{name}.json").read_text())
    data.update(changes, session_id=session_id)
    return data


def _template(session_id: str, steps: list[tuple[str, str, dict[str, Any]]]) -> list[bytes]:
    """The encoded lines of ``steps``, with placeholders for seq, ts and the turn number."""
    lines = []
    for event, name, changes in steps:
        payload = _payload(name, session_id, changes)
        rec = record.build_record(
            payload, event=event, seq=0, ts=_TS, environ=ENV, cap=record.DEFAULT_FIELD_CAP
        )
        rec["seq"] = _SEQ
        lines.append(fileio.encode_line(rec))
    return lines


class _Writer:
    """Fills the placeholders of template lines and buffers them into the log."""

    def __init__(self, path: str, start: float, step_s: float):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, paths.FILE_MODE)
        self.seq = 0
        self.t = start
        self.step = step_s
        self.buf: list[bytes] = []
        self.size = 0
        self.pending = 0
        self.counts: dict[str, int] = {}

    def put(self, lines: list[bytes], events: list[str], turn: int) -> list[bytes]:
        out = []
        tag = str(turn).encode()
        for line, event in zip(lines, events, strict=True):
            self.seq += 1
            self.t += self.step
            ts = record.iso_utc(self.t).encode()
            filled = line.replace(b'"' + _SEQ.encode() + b'"', b"%d" % self.seq, 1)
            filled = filled.replace(_TS.encode(), ts, 1).replace(_TURN.encode(), tag)
            out.append(filled)
            self.counts[event] = self.counts.get(event, 0) + 1
        self.buf.extend(out)
        added = sum(len(x) for x in out)
        self.size += added
        self.pending += added
        if self.pending > 1 << 22:
            self.flush()
        return out

    def flush(self) -> None:
        fileio.write_all(self.fd, b"".join(self.buf))
        self.buf.clear()
        self.pending = 0

    def close(self) -> None:
        self.flush()
        os.close(self.fd)


def _fold(status: dict[str, Any] | None, lines: list[bytes]) -> dict[str, Any] | None:
    for line in lines:
        status = state.apply(status, fastjson.loads(line))
    return status


_COUNTER_OF = {
    "UserPromptSubmit": "prompts",
    "PreToolUse": "tool_uses",
    "PostToolUseFailure": "failures",
    "Stop": "turns",
    "StopFailure": "errors",
    "SubagentStart": "subagents",
}


def write_session(
    root: str,
    session_id: str,
    records: int | None = None,
    *,
    target_bytes: int | None = None,
    start: float | None = None,
    step_s: float = 0.5,
    ended: bool = False,
    busy: bool = False,
    exact_limit: int = 50_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Write one session's log (about ``records`` records, or until it is ``target_bytes`` long), its
    status and its lock file under ``root``; return the status.

    ``ended``: the log ends with SessionEnd. ``busy``: it ends inside a turn (a tool running). Otherwise
    it ends at a Stop (idle). Files get the mtime of the last record.
    """
    paths.ensure_layout(root)
    rng = random.Random(seed)
    start = time.time() - 86400 if start is None else start
    log = paths.events_path(root, session_id)
    writer = _Writer(log, start, step_s)
    templates = [(_template(session_id, steps), [e for e, _, _ in steps]) for steps in TURNS]
    exact = records is not None and records <= exact_limit and target_bytes is None
    status = _fold(None, writer.put(_template(session_id, START), ["SessionStart"], 0))
    turn = 0
    last: list[bytes] = []
    before_last: tuple[dict[str, int], int] = ({}, 0)  # the counts and seq before the last turn
    while writer.size < target_bytes if target_bytes is not None else writer.seq < (records or 0):
        turn += 1
        lines, events = templates[rng.randrange(len(templates))]
        before_last = (dict(writer.counts), writer.seq)
        last = writer.put(lines, events, turn)
        if exact or turn == 1:
            status = _fold(status, last)
    if not exact and turn > 1:
        # The turns repeat and each ends the same way, so the full fold is the fold of the last turn on
        # a status with the counters and seq of everything before it (the tests compare the two).
        assert status is not None
        counts, seq = before_last
        status["counters"] = dict.fromkeys(state.COUNTERS, 0)
        for event, n in counts.items():
            if event in _COUNTER_OF:
                status["counters"][_COUNTER_OF[event]] += n
        status["seq"] = seq
        status = _fold(status, last)
    tails = []
    if busy:  # end inside a turn: a prompt, and a tool that has not finished
        lines, events = templates[0]
        tails.append(writer.put(lines[:2], events[:2], turn + 1))
    if ended:
        tails.append(writer.put(_template(session_id, END), ["SessionEnd"], turn + 1))
    writer.close()
    for tail in tails:
        status = _fold(status, tail)
    assert status is not None
    status_file = paths.status_path(root, session_id)
    fileio.atomic_write(status_file, fileio.encode_line(status))
    lock = paths.lock_path(root, session_id)
    os.close(os.open(lock, os.O_WRONLY | os.O_CREAT, paths.FILE_MODE))
    for path in (log, status_file, lock):
        os.utime(path, (writer.t, writer.t))
    return status


def write_log_of_size(root: str, session_id: str, target_bytes: int, **kwargs: Any) -> dict[str, Any]:
    """One session whose log is about ``target_bytes`` long (it ends at a Stop); its status."""
    return write_session(root, session_id, target_bytes=target_bytes, **kwargs)


def session_ids(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct UUID-shaped session ids, the same for the same seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        h = f"{rng.getrandbits(128):032x}"
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}")
    return out


def write_statedir(
    root: str,
    sessions: int,
    records: int,
    *,
    ended_fraction: float = 0.9,
    busy: int = 0,
    seed: int = 0,
    now: float | None = None,
) -> list[str]:
    """``sessions`` sessions of about ``records`` records each under ``root``; their ids.

    The first ``busy`` sessions end inside a turn (a tool running) and recently; of the rest,
    ``ended_fraction`` ended (SessionEnd) and the others are idle. Start times are spread over the last
    30 days (ended ones older), so ages, ``--since`` and prune have something to work on.
    """
    now = time.time() if now is None else now
    rng = random.Random(seed)
    ids = session_ids(sessions, seed)
    for i, sid in enumerate(ids):
        is_busy = i < busy
        ended = not is_busy and rng.random() < ended_fraction
        span = records * 0.5
        age = rng.uniform(0, 3600) if is_busy else rng.uniform(3600, 30 * 86400)
        write_session(
            root, sid, records, start=now - age - span, ended=ended, busy=is_busy, seed=seed * 1_000_003 + i
        )
    return ids


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", help="the state dir to write into (CCM_HOME)")
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--records", type=int, default=200, help="records per session")
    parser.add_argument("--log-mb", type=float, help="instead: one session with a log of this many MB")
    parser.add_argument("--busy", type=int, default=0, help="sessions that end inside a turn")
    parser.add_argument("--ended-fraction", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    if args.log_mb:
        [sid] = session_ids(1, args.seed)
        write_log_of_size(args.root, sid, int(args.log_mb * 1e6), seed=args.seed)
        print(f"{sid}: {os.path.getsize(paths.events_path(args.root, sid)) / 1e6:.1f} MB", end="")
    else:
        ids = write_statedir(
            args.root, args.sessions, args.records, ended_fraction=args.ended_fraction, busy=args.busy,
            seed=args.seed,
        )  # fmt: skip
        print(f"{len(ids)} sessions x {args.records} records", end="")
    print(f" in {time.perf_counter() - started:.1f} s under {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
