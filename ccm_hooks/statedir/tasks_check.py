"""Checking what people and scripts give for a task (``task add`` options, JSON lines on stdin, ``start``):
each function returns the value or raises CcmError with one line saying what is allowed (spec/tasks.md)."""

from __future__ import annotations

from collections.abc import Mapping

from ccm_hooks import paths, watch
from ccm_hooks.errors import CcmError

PERMISSION_MODES = ("acceptEdits", "auto", "bypassPermissions", "manual", "default", "dontAsk", "plan")
MAX_PROMPT_BYTES = 100_000  # one argv string may hold 128 KiB on Linux; the retry note and suffix need room
MAX_RETRIES = 10
MAX_PRIORITY = 1000
MAX_TIMEOUT_S = 7 * 86400
MAX_LABELS = 20
MAX_AFTER = 50
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:/[]@")


def check_prompt(prompt: object) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise CcmError("the prompt is empty; say what the agent should do")
    if "\0" in prompt:
        raise CcmError("the prompt holds a NUL character, which no command line can carry")
    if len(prompt.encode("utf-8", "surrogatepass")) > MAX_PROMPT_BYTES:
        raise CcmError(
            f"the prompt is longer than {MAX_PROMPT_BYTES} bytes; write it to a file in the project and "
            "ask the agent to read that file"
        )
    if prompt.lstrip().startswith("/"):
        # Claude Code runs a prompt that starts with a slash command as that command, given on the
        # command line as typed: never by accident (spec/tasks.md#starting-the-agent).
        raise CcmError(
            "the prompt starts with '/', which Claude Code may run as a slash command; start it with a word "
            "(e.g. 'In /path ...')"
        )
    return prompt


def check_id(value: object, what: str = "task id") -> str:
    if not paths.valid_session_id(value):
        raise CcmError(f"{what} {value!r} is not a plain id (letters, digits, - and _)")
    return str(value)


def check_int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CcmError(f"{what} must be a whole number from {low} to {high} (got {value!r})")
    return value


def parse_duration(value: object) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``2h``, ``1d`` (a number alone is seconds)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().lower()
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(text[-1])
        number = text[:-1] if unit else text
        try:
            seconds = float(number) * (unit or 1)
        except ValueError:
            raise CcmError(f"--timeout {value!r} is not a duration (90s, 15m, 2h, 1d)") from None
    else:
        raise CcmError(f"--timeout {value!r} is not a duration (90s, 15m, 2h, 1d)")
    if not 1 <= seconds <= MAX_TIMEOUT_S:
        raise CcmError(f"--timeout must be between 1 s and {MAX_TIMEOUT_S // 86400} days (got {value!r})")
    return seconds


def check_marker(value: object, what: str) -> str:
    try:
        return str(watch.check_setting("done_marker", value))
    except watch.SettingError as exc:
        raise CcmError(str(exc).replace("done_marker", what)) from None


def check_word(value: object, what: str, max_len: int = 100) -> str:
    """A model name or a ref-like word: no spaces, nothing a command line could take for an option."""
    if not isinstance(value, str) or not 0 < len(value) <= max_len or value.startswith("-"):
        raise CcmError(f"{what} {value!r} must be 1 to {max_len} characters and not start with '-'")
    if not all(ch in _NAME_CHARS or (ch.isalnum() and ch.isascii()) for ch in value) or ".." in value:
        raise CcmError(f"{what} {value!r} may hold only letters, digits and . _ - : / [ ] @")
    return value


def check_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 100:
        raise CcmError("--name must be 1 to 100 characters")
    if any(not ch.isprintable() for ch in value):
        raise CcmError("--name must be one line of printable text")
    return value.strip()


def check_labels(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping) or len(value) > MAX_LABELS:
        raise CcmError(f"labels must be at most {MAX_LABELS} KEY=VALUE pairs")
    out: dict[str, str] = {}
    for key, val in value.items():
        if not paths.valid_session_id(key) or len(str(key)) > 63:
            raise CcmError(f"label key {key!r} must be a plain word (letters, digits, - and _)")
        if not isinstance(val, str) or len(val) > 200 or any(not ch.isprintable() for ch in val):
            raise CcmError(f"label {key}: the value must be one line of at most 200 characters")
        out[str(key)] = val
    return out


def parse_label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise CcmError(f"--label {text!r} must be KEY=VALUE")
    return key.strip(), value


def check_permission_mode(value: object) -> str:
    if value not in PERMISSION_MODES:
        raise CcmError(f"--permission-mode {value!r} is not one of {', '.join(PERMISSION_MODES)}")
    return str(value)
