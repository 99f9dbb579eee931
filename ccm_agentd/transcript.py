"""Claude Code's transcript (``transcript_path``, JSONL), read only for one question: did a prompt ccm typed
reach the conversation even though no UserPromptSubmit was recorded (a hook that failed)?

ccm types a text again only after its input box was found empty with no UserPromptSubmit seen; before it
does, the transcript's tail is searched for that prompt, so a submitted prompt whose hook got lost is not
typed twice. The transcript format is Claude Code's internal one: only ``type``, ``timestamp`` and
``message.content`` are read, and anything unexpected means "not found" (ccm then types again, as before).
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from ccm_hooks.statedir.timefmt import parse_ts

TAIL_BYTES = 1 << 19


def _text_of(content: Any) -> str | None:
    """A user message's text: the string, or the last text block (earlier ones carry failed prompts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [b.get("text") for b in content if isinstance(b, dict) and b.get("type") == "text"]
        texts = [t for t in texts if isinstance(t, str) and not t.lstrip().startswith("<system-reminder>")]
        return texts[-1] if texts else None
    return None


def submitted_after(path: object, text: str, since: float) -> bool:
    """Whether the transcript holds a user message with ``text`` (surrounding whitespace aside) written at
    or after ``since`` (epoch seconds, less a second of clock slack)."""
    if not isinstance(path, str) or not path:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return False
        start = max(0, st.st_size - TAIL_BYTES)
        data = os.pread(fd, st.st_size - start, start)
    except OSError:
        return False
    finally:
        os.close(fd)
    wanted = text.strip()
    for line in data.split(b"\n"):
        if b'"user"' not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # the first line of the tail may be cut; the last may be half written
        if not isinstance(rec, dict) or rec.get("type") != "user":
            continue
        when = parse_ts(rec.get("timestamp"))
        said = _text_of((rec.get("message") or {}).get("content"))
        if when is not None and when >= since - 1.0 and isinstance(said, str) and said.strip() == wanted:
            return True
    return False
