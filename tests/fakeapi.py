"""A scripted local stand-in for the Anthropic Messages API, for driving the real ``claude`` CLI offline.

``FakeAnthropic`` is a ThreadingHTTPServer on 127.0.0.1 (free port) that answers ``POST /v1/messages``
(streamed as Server-Sent Events when the body says ``"stream": true``, else one JSON message),
``POST /v1/messages/count_tokens``, and anything else with a 404 in Anthropic's error shape. Every request is
recorded (path, parsed body, arrival time, classification) for assertions. A *responder* (a callable taking
the request body) decides each model turn: a list of content blocks (``text()``, ``tool_use()``; a bare
string is shorthand for one text block), the stop_reason following from them (``tool_use`` if any
tool_use block, else ``end_turn``), or an ``api_error(...)``. ``Script`` hands out replies in order, then
falls back to ``default_responder()``.

What Claude Code sends (logged against this server, env from ``claude_env``)
-------------------------------------------------------------------------------
Every call is ``POST /v1/messages?beta=true`` with ``"stream": true``. Model and max_tokens tell nothing apart
within a version: 2.1.197 asks for ``claude-opus-4-8`` with ``max_tokens`` 64000, 2.1.328 for
``claude-opus-5-5`` (``claude-sonnet-5-5`` on a claude.ai login) with 128000, side requests included (some
side requests ask for less). The system prompt opens with a billing line ``x-anthropic-billing-header:
cc_version=<version>.<x>; cc_entrypoint=<sdk-cli|cli>;`` (also in the ``User-Agent: claude-cli/<version>
(external, <entrypoint>)`` header).

* Main turns: ``You are a Claude agent, built on Anthropic's Claude Agent SDK.`` under ``-p``, ``You are
  Claude Code, Anthropic's official CLI for Claude.`` interactive; always with tools (2.1.197: about 24;
  2.1.328: about 12, the rest deferred behind ``ToolSearch``). The user's text follows ``<system-reminder>``
  text blocks, and message lists contain ``role: "system"`` entries: the last message is not necessarily the
  user's.
* Subagents (Agent tool): ``cc_is_subagent=true`` in the billing line, their own system prompt and fewer
  tools. Real model turns (they run tools and fire hooks with agent_id): they go to the responder (and consume
  a Script entry, in arrival order) but are recorded as kind "subagent", not in ``main_requests()``. On
  2.1.328 the Agent tool runs them in the background by default: the main turn goes on (and may end) while
  they run, and their result comes back as a new main turn whose user text is a ``<task-notification>``.
* ``/compact`` (both): a forked copy of the main conversation (same system prompt and tools) whose last user
  text is ``CRITICAL: Respond with TEXT ONLY...`` + ``Your task is to create a detailed summary...``.
* The auto-mode safety check ("auto" permission mode; the default mode of the 2.1.328 TUI):
  - 2.1.197 asks a side request per risky tool call: system prompt ``You are a security monitor for autonomous
    AI coding agents...``, no tools, ``stop_sequences: ["</block>"]``, max_tokens 64 (stage 1, then 8192 for
    stage 2 when stage 1 blocks); the answer must begin ``<block>no</block>`` (allow) or
    ``<block>yes</block><reason>[Rule] ...</reason>``. Anything else blocks the call ("could not evaluate").
  - 2.1.328 asks the API itself: a main request in auto (or plan) mode carries ``safeguards: [{"type":
    "dangerous_tool_use", "classifier_context": {...}}]`` and the beta ``dangerous-tool-use-2026-09-03``; the
    verdict comes back in the ``message_delta`` event as ``delta.safeguard_results: [{"type":
    "dangerous_tool_use", "status": {"type": "available", "tool_uses": {<tool_use id>: {"type": "evaluated",
    "outcome": "not_flagged" | "flagged"}}}}]``. Without it, a tool call that needs the check opens an "Auto
    mode can't check actions in this session" dialog (interactive) or is refused (``-p``); a status ``{"type":
    "unsupported"}`` does the same here (no local fallback for a non-Anthropic base URL). Calls that
    acceptEdits mode would allow (writes inside the project, ...) skip the check. See ``auto_mode_verdict``.
* Interactive 2.1.197 only: a session **title** request alongside the first main request of a long enough
  prompt: no tools, thinking disabled, ``output_config.format`` = json_schema ``{"title": string}``. Not seen
  on 2.1.328.
* Background sessions (``claude --bg``; seen on 2.1.328, whose bg sessions reach a local base URL): a job
  **label** request (no tools, system = billing line only, user text ``... 2-4 word lowercase label for this
  job ...``) and job **state** requests (system ``A user kicked off a Claude Code agent to do a coding task
  and walked away...``) that expect ``{"state": "working|blocked|done|failed", "detail": ..., "tempo": ...,
  "output": {...}}`` and retry once with "Previous response was not valid JSON" otherwise.
* Errors: 2.1.328 answers a 400 by sending the same turn again with fewer betas (up to 6 requests for one turn
  here, each a "main" request taking the next Script entry); 2.1.197 sends it once. Both retry 429/5xx (a 429
  with ``retry-after: 0`` after about 0.6 s; CLAUDE_CODE_MAX_RETRIES bounds that). A usage limit is a 429 with
  ``anthropic-ratelimit-unified-*`` headers (see :func:`usage_limit`): with a claude.ai login
  (``claude_env(subscription=True)``) Claude Code shows ``You've hit your session limit · resets 1:23am
  (UTC)`` (2.1.197) or ``You've hit your 5-hour limit · resets ...`` (2.1.328); with an API key it shows ``API
  Error: Request rejected (429) · <message>``.
* Known from the binaries' query sources but not seen with this env: prompt suggestions (a fork with
  ``[SUGGESTION MODE: ...``; ``claude_env`` pins CLAUDE_CODE_ENABLE_PROMPT_SUGGESTION=false), away summary,
  agent progress summary, hook ``prompt``/``agent`` handlers, 2.1.328's local auto-mode classifier (per its
  strings a fallback on direct connections to Anthropic)...

How requests are told apart (``auxiliary_purpose``), in order: a known side prompt (auto-mode classifier, job
label, job state); ``max_tokens`` <= 1 (a probe); ``output_config.format`` present (structured output: title);
no ``tools`` (every model turn offers tools; side queries never do); last user text holding a known fork
prompt (compact, prompt suggestion, away or agent summary). Side requests get ``auxiliary_reply()`` (an allow
or block verdict, valid JSON for a schema or the job state, a ``<summary>`` for compact, else "OK") and never
reach the responder or the Script. Main turns that ask for a safety verdict get one in their ``message_delta``
(:func:`safeguard_results`), so tools run in auto mode on both versions.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "ApiError",
    "FakeAnthropic",
    "RecordedRequest",
    "Reply",
    "Responder",
    "Script",
    "always",
    "api_error",
    "as_blocks",
    "auxiliary_purpose",
    "auxiliary_reply",
    "default_responder",
    "is_auxiliary",
    "is_subagent",
    "last_user_is_tool_result",
    "last_user_text",
    "safeguard_results",
    "stop_reason_for",
    "system_text",
    "text",
    "tool_results",
    "tool_use",
    "usage_limit",
]

JSON = dict[str, Any]


# --- replies -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiError:
    """An HTTP error answer in Anthropic's error shape (``{"type": "error", "error": {...}}``)."""

    status: int
    type: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def body(self) -> JSON:
        return {"type": "error", "error": {"type": self.type, "message": self.message}}


Reply = str | Sequence[JSON] | ApiError
"""What a responder returns: content blocks (see :func:`text`, :func:`tool_use`), a string (shorthand for
one text block) or an :class:`ApiError`."""

Responder = Callable[[JSON], Reply]
"""Called with the parsed request body of every ``POST /v1/messages``; returns the reply."""

_ids = itertools.count(1)


def _next_id(prefix: str) -> str:
    # A process-wide counter keeps ids unique across servers and tests, which the CLI relies on
    # to pair tool_use with tool_result.
    return f"{prefix}{next(_ids):06d}"


def text(s: str) -> JSON:
    """A text content block."""
    return {"type": "text", "text": s}


def tool_use(name: str, input: Mapping[str, Any], id: str | None = None) -> JSON:
    """A tool_use content block; ``id`` defaults to a fresh unique ``toolu_...``."""
    return {"type": "tool_use", "id": id or _next_id("toolu_test"), "name": name, "input": dict(input)}


def api_error(status: int, type: str, message: str, headers: Mapping[str, str] | None = None) -> ApiError:
    """An HTTP error reply, e.g. ``api_error(429, "rate_limit_error", "slow down", {"retry-after": "1"})``."""
    return ApiError(status, type, message, dict(headers or {}))


_LIMIT_MESSAGE = "This request would exceed your account's rate limit. Please try again later."


def usage_limit(resets_at: int, claim: str = "five_hour", message: str = _LIMIT_MESSAGE) -> ApiError:
    """A usage-limit refusal as the API sends it: a 429 with the ``anthropic-ratelimit-unified-*`` headers.

    With a claude.ai login (``claude_env(subscription=True)``) Claude Code turns it into "You've hit your ...
    limit · resets <time>" and, from 2.1.234 on, continues by itself some 30-90 s after ``resets_at``; with an
    API key it shows "API Error: Request rejected (429) · <message>".
    """
    headers = {
        "anthropic-ratelimit-unified-status": "rejected",
        "anthropic-ratelimit-unified-reset": str(resets_at),
        "anthropic-ratelimit-unified-representative-claim": claim,
        "retry-after": str(max(0, resets_at - int(time.time()))),
    }
    return ApiError(429, "rate_limit_error", message, headers)


def always(reply: Reply) -> Responder:
    """A responder giving the same reply to every turn, e.g. an error that must survive the CLI's retries
    (2.1.328 sends a turn refused with a 400 again, with fewer betas)."""
    return lambda body: reply


def as_blocks(reply: Reply) -> list[JSON] | ApiError:
    """Normalise a reply: a string becomes one text block, a single block dict a one-item list."""
    if isinstance(reply, ApiError):
        return reply
    if isinstance(reply, str):
        return [text(reply)]
    if isinstance(reply, Mapping):
        return [dict(reply)]
    return list(reply)


def stop_reason_for(blocks: Sequence[JSON]) -> str:
    return "tool_use" if any(b.get("type") == "tool_use" for b in blocks) else "end_turn"


# --- reading requests ----------------------------------------------------------------------------------


def _content_blocks(message: JSON) -> list[JSON]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def _last_user_message(body: JSON) -> JSON | None:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            return message  # type: ignore[no-any-return]
    return None


def last_user_text(body: JSON) -> str:
    """The text of the last user message, e.g. the prompt or ``"Stop hook feedback:\\n..."``.

    Claude Code wraps context in ``<system-reminder>`` text blocks next to the real text; those are
    dropped so tests see what the user (or a hook) said. Returns "" when there is no user text.
    """
    message = _last_user_message(body)
    if message is None:
        return ""
    parts = [
        b.get("text", "")
        for b in _content_blocks(message)
        if b.get("type") == "text" and not b.get("text", "").lstrip().startswith("<system-reminder>")
    ]
    return "\n".join(p for p in parts if p)


def last_user_is_tool_result(body: JSON) -> bool:
    """Whether the last user message carries a tool_result (i.e. this request follows a tool call)."""
    message = _last_user_message(body)
    return message is not None and any(b.get("type") == "tool_result" for b in _content_blocks(message))


def tool_results(body: JSON) -> list[JSON]:
    """The tool_result blocks of the last user message."""
    message = _last_user_message(body)
    if message is None:
        return []
    return [b for b in _content_blocks(message) if b.get("type") == "tool_result"]


def system_text(body: JSON) -> str:
    system = body.get("system")
    if isinstance(system, str):
        return system
    return "\n".join(b.get("text", "") for b in system or [] if isinstance(b, dict))


def is_subagent(body: JSON) -> bool:
    """Whether a request is a turn of a subagent (Agent tool) rather than of the top-level conversation.

    Claude Code marks them in the billing line that opens the system prompt: ``cc_is_subagent=true``.
    """
    return "cc_is_subagent=true" in system_text(body)


# Side requests whose own prompt names them. 2.1.197's auto-mode classifier and the background-session
# job label and job state requests (see the module docstring); checked before the generic rules below.
_SYSTEM_MARKERS: dict[str, str] = {
    "You are a security monitor for autonomous AI coding agents": "auto_mode_classifier",
    "A user kicked off a Claude Code agent to do a coding task and walked away": "job_state",
}
_USER_MARKERS: dict[str, str] = {
    "2-4 word lowercase label for this job": "job_label",
}

# Prompts that Claude Code's "forked agent" side queries append to a COPY of the main conversation (same
# system prompt and tools, to reuse the prompt cache): only their last user text tells them apart.
_FORK_MARKERS: dict[str, str] = {
    "Your task is to create a detailed summary of": "compact",
    "[SUGGESTION MODE:": "prompt_suggestion",
    "The user stepped away and is coming back.": "away_summary",
    "Describe your most recent action in 3-5 words": "agent_summary",
}


def auxiliary_purpose(body: JSON) -> str | None:
    """Why Claude Code sent this /v1/messages request if it is a side request, else None.

    Returns one of the named purposes in ``_SYSTEM_MARKERS`` / ``_USER_MARKERS`` (auto-mode classifier, job
    label, job state), "probe" (max_tokens 1: quota/health check), "structured" (asks for JSON via
    ``output_config.format``, e.g. the session title), "side_query" (offers no tools: bash-prefix
    extraction, hook prompts...), or one of the forked-agent purposes in ``_FORK_MARKERS``.
    """
    system = system_text(body)
    for marker, purpose in _SYSTEM_MARKERS.items():
        if marker in system:
            return purpose
    said = last_user_text(body)
    for marker, purpose in _USER_MARKERS.items():
        if marker in said:
            return purpose
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens <= 1:
        return "probe"
    if (body.get("output_config") or {}).get("format"):
        return "structured"
    if not body.get("tools"):
        return "side_query"
    for marker, purpose in _FORK_MARKERS.items():
        if marker in said:
            return purpose
    return None


def is_auxiliary(body: JSON) -> bool:
    """Whether a /v1/messages request is a side request rather than a model turn (main or subagent)."""
    return auxiliary_purpose(body) is not None


def auxiliary_reply(body: JSON, verdict: str = "not_flagged") -> list[JSON]:
    """A harmless answer to a side request, shaped so that Claude Code accepts it. ``verdict`` decides what
    2.1.197's auto-mode classifier says: "not_flagged" allows the tool call, anything else blocks it."""
    purpose = auxiliary_purpose(body)
    if purpose == "auto_mode_classifier":
        if verdict == "not_flagged":
            return [text("<block>no</block>")]
        return [text("<block>yes</block><reason>[Test Rule] blocked by the scripted classifier</reason>")]
    if purpose == "job_label":
        return [text("test job")]
    if purpose == "job_state":
        state = {"state": "done", "detail": "test job finished", "tempo": "idle"}
        return [text(json.dumps({**state, "output": {"result": "done"}}))]
    fmt = (body.get("output_config") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        return [text(json.dumps(_sample_for_schema(fmt.get("schema") or {})))]
    if purpose == "compact":
        return [text("<analysis>Test.</analysis>\n<summary>Summary of the test conversation.</summary>")]
    return [text("OK")]


def _sample_for_schema(schema: JSON) -> Any:
    """The smallest value satisfying a simple JSON schema (objects, strings, numbers, booleans, arrays)."""
    kind = schema.get("type")
    if kind == "object":
        props: JSON = schema.get("properties") or {}
        required = schema.get("required") or list(props)
        return {name: _sample_for_schema(props.get(name) or {}) for name in required}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return 0
    if kind == "boolean":
        return False
    if "enum" in schema:
        return schema["enum"][0]
    return "Test session"


def safeguard_results(body: JSON, blocks: Sequence[JSON], verdict: str | None) -> list[JSON] | None:
    """The auto-mode verdicts 2.1.328 expects in the ``message_delta`` of a reply to a request that carries
    ``safeguards`` (see the module docstring), or None when the request asked for none or ``verdict`` is None.

    ``verdict``: "not_flagged" (every tool call of the reply may run), "flagged" (each is refused, "Blocked by
    auto mode"), or "unsupported" (the server does not run the check: Claude Code cannot judge the calls).
    """
    safeguards = body.get("safeguards") or []
    asked = any(isinstance(item, dict) and item.get("type") == "dangerous_tool_use" for item in safeguards)
    if not asked or verdict is None:
        return None
    if verdict == "unsupported":
        return [{"type": "dangerous_tool_use", "status": {"type": "unsupported"}}]
    uses = {b["id"]: {"type": "evaluated", "outcome": verdict} for b in blocks if b.get("type") == "tool_use"}
    return [{"type": "dangerous_tool_use", "status": {"type": "available", "tool_uses": uses}}]


# --- responders ----------------------------------------------------------------------------------------


def default_responder(keywords: Mapping[str, Reply] | None = None) -> Responder:
    """Rule-based replies: tool_result → "All done."; a keyword in the last user text → its reply;
    anything else → "Hi there."."""
    table = dict(keywords or {})

    def respond(body: JSON) -> Reply:
        if last_user_is_tool_result(body):
            return [text("All done.")]
        said = last_user_text(body)
        for keyword, reply in table.items():
            if keyword in said:
                return reply
        return [text("Hi there.")]

    return respond


class Script:
    """Replies handed out in order to main-conversation requests, then ``fallback`` (the default).

    Thread-safe: parallel requests each take a distinct reply.
    """

    def __init__(self, replies: Sequence[Reply], fallback: Responder | None = None) -> None:
        self._replies = list(replies)
        self._fallback = fallback or default_responder()
        self._lock = threading.Lock()
        self.used = 0

    def __call__(self, body: JSON) -> Reply:
        with self._lock:
            if self.used < len(self._replies):
                reply = self._replies[self.used]
                self.used += 1
                return reply
        return self._fallback(body)

    @property
    def exhausted(self) -> bool:
        with self._lock:
            return self.used >= len(self._replies)


# --- the server ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it.

    ``kind`` is "main" (a turn of the top-level conversation), "subagent", "auxiliary" (see
    :func:`auxiliary_purpose`, stored in ``purpose``), "count_tokens" or "other" (any unknown route).
    """

    method: str
    path: str
    query: str
    body: JSON
    time: float
    kind: str
    purpose: str | None
    headers: Mapping[str, str]

    @property
    def last_user_text(self) -> str:
        return last_user_text(self.body)

    @property
    def has_tool_result(self) -> bool:
        return last_user_is_tool_result(self.body)


class FakeAnthropic:
    """The fake API server.

    ``responder`` answers main-conversation AND subagent turns (use :func:`is_subagent` inside it to tell
    them apart); side requests get :func:`auxiliary_reply` and never reach it. It may be replaced at any
    time: the next request uses the new one. ``auto_mode_verdict`` is what the auto-mode safety check says
    about every tool call (both versions' forms, see :func:`safeguard_results`): "not_flagged" by default, so
    tools run in auto mode, the default mode of the 2.1.328 TUI.
    """

    def __init__(self, responder: Responder | None = None) -> None:
        self.responder: Responder = responder or default_responder()
        self.responder_errors: list[BaseException] = []
        self.auto_mode_verdict: str | None = "not_flagged"
        self._changed = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> FakeAnthropic:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        server.daemon_threads = True  # a client that never hangs up must not block stop()
        self._server = server
        # A short poll interval makes stop() (shutdown) quick: the default 0.5 s is paid on every test.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fakeapi", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("fakeapi server not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What ANTHROPIC_BASE_URL must be set to."""
        return f"http://127.0.0.1:{self.port}"

    # recorded traffic

    def record(self, request: RecordedRequest) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far (a snapshot), in arrival order."""
        with self._changed:
            return list(self._requests)

    def main_requests(self) -> list[RecordedRequest]:
        """The /v1/messages requests of the top-level conversation: no side requests, no subagent turns."""
        return [r for r in self.requests if r.kind == "main"]

    def subagent_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.kind == "subagent"]

    def auxiliary_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.kind == "auxiliary"]

    def clear(self) -> None:
        with self._changed:
            self._requests.clear()

    def wait_for_requests(
        self, predicate: Callable[[list[RecordedRequest]], bool], timeout: float = 30.0
    ) -> list[RecordedRequest]:
        """Block until ``predicate(all requests)`` holds; returns the requests. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self._requests)):
                left = deadline - time.monotonic()
                if left <= 0:
                    summary = [(r.kind, r.purpose, r.last_user_text[:60]) for r in self._requests]
                    raise TimeoutError(f"fakeapi: condition not met after {timeout}s; requests: {summary}")
                self._changed.wait(left)
            return list(self._requests)

    def wait_for_main_requests(self, count: int, timeout: float = 30.0) -> list[RecordedRequest]:
        """Block until at least ``count`` main-conversation requests arrived; returns them."""
        self.wait_for_requests(lambda rs: sum(r.kind == "main" for r in rs) >= count, timeout)
        return self.main_requests()

    # answering

    def classify(self, body: JSON) -> tuple[str, str | None]:
        purpose = auxiliary_purpose(body)
        if purpose is not None:
            return "auxiliary", purpose
        return ("subagent" if is_subagent(body) else "main"), None

    def reply_for(self, kind: str, body: JSON) -> list[JSON] | ApiError:
        if kind == "auxiliary":
            return auxiliary_reply(body, self.auto_mode_verdict or "flagged")
        try:
            return as_blocks(self.responder(body))
        except Exception as exc:
            # A broken responder must fail the run fast and visibly: a 400 is not retried (a 500 would be,
            # with backoff, for minutes). Tests can also assert that responder_errors stayed empty.
            self.responder_errors.append(exc)
            return api_error(400, "invalid_request_error", f"fakeapi responder raised {exc!r}")


def _make_handler(api: FakeAnthropic) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        fake = api

    return Handler


class _Handler(BaseHTTPRequestHandler):
    fake: FakeAnthropic
    server_version = "fakeapi/1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean; the recorded requests are the log

    def _read_json(self) -> JSON:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            data = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            data = {"_raw": raw.decode("utf-8", "replace")}
        return data if isinstance(data, dict) else {"_json": data}

    def _record(self, body: JSON, kind: str, purpose: str | None = None) -> None:
        url = urlsplit(self.path)
        self.fake.record(
            RecordedRequest(
                method=self.command,
                path=url.path,
                query=url.query,
                body=body,
                time=time.time(),
                kind=kind,
                purpose=purpose,
                headers=dict(self.headers.items()),
            )
        )

    def _send_json(self, status: int, payload: JSON, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", _next_id("req_test"))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._record({}, "other")
        self._send_not_found()

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self._read_json()
        if path == "/v1/messages":
            # Record before answering: a test that sees the CLI react may rely on the request being there.
            kind, purpose = self.fake.classify(body)
            self._record(body, kind, purpose)
            reply = self.fake.reply_for(kind, body)
            self._answer_messages(body, reply, self.fake.auto_mode_verdict)
        elif path == "/v1/messages/count_tokens":
            self._record(body, "count_tokens")
            self._send_json(200, {"input_tokens": _estimate_tokens(body)})
        else:
            self._record(body, "other")
            self._send_not_found()

    def _send_not_found(self) -> None:
        error = api_error(404, "not_found_error", f"fakeapi: no route for {self.command} {self.path}")
        self._send_json(404, error.body())

    def _answer_messages(self, body: JSON, reply: list[JSON] | ApiError, verdict: str | None) -> None:
        if isinstance(reply, ApiError):
            self._send_json(reply.status, reply.body(), reply.headers)
            return
        message = _message(str(body.get("model") or "claude-test"), reply)
        verdicts = safeguard_results(body, reply, verdict)
        if verdicts is not None:
            message["safeguard_results"] = verdicts
        if body.get("stream"):
            self._stream(message)
        else:
            self._send_json(200, message)

    def _stream(self, message: JSON) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("request-id", _next_id("req_test"))
        # HTTP/1.0 without Content-Length: closing the connection ends the stream.
        self.end_headers()
        for event, data in _sse_events(message):
            self.wfile.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()


def _estimate_tokens(body: JSON) -> int:
    return max(1, len(json.dumps(body)) // 4)


def _message(model: str, blocks: list[JSON]) -> JSON:
    output_tokens = max(1, len(json.dumps(blocks)) // 4)
    return {
        "id": _next_id("msg_test"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason_for(blocks),
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def _sse_events(message: JSON) -> Iterator[tuple[str, JSON]]:
    """The stream of events for a complete message, as the real API sends it."""
    start = dict(message, content=[], stop_reason=None, stop_sequence=None)
    start["usage"] = dict(message["usage"], output_tokens=1)
    yield "message_start", {"type": "message_start", "message": start}
    for index, block in enumerate(message["content"]):
        if block["type"] == "tool_use":
            opening = dict(block, input={})
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        else:
            opening = dict(block, text="")
            delta = {"type": "text_delta", "text": block.get("text", "")}
        yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": opening}
        yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    # 2.1.328 reads the auto-mode verdicts from the delta that ends the message.
    ending: JSON = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    if "safeguard_results" in message:
        ending["safeguard_results"] = message["safeguard_results"]
    usage = {"output_tokens": message["usage"]["output_tokens"]}
    yield "message_delta", {"type": "message_delta", "delta": ending, "usage": usage}
    yield "message_stop", {"type": "message_stop"}
