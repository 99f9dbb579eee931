"""A scripted local stand-in for the Anthropic Messages API, for driving the real ``claude`` CLI offline.

``FakeAnthropic`` is a ThreadingHTTPServer on 127.0.0.1 (free port) that answers ``POST /v1/messages``
(streamed as Server-Sent Events when the body says ``"stream": true``, else one JSON message),
``POST /v1/messages/count_tokens``, and anything else with a 404 in Anthropic's error shape. Every request is
recorded (path, parsed body, arrival time, classification) for assertions. A *responder* (a callable taking
the request body) decides each model turn: a list of content blocks (``text()``, ``tool_use()``; a bare
string is shorthand for one text block), the stop_reason following from them (``tool_use`` if any
tool_use block, else ``end_turn``), or an ``api_error(...)``. ``Script`` hands out replies in order, then
falls back to ``default_responder()``.

What Claude Code 2.1.197 actually sends (logged against this server, env from ``claude_env``)
------------------------------------------------------------------------------------------------
Every call is ``POST /v1/messages?beta=true`` with ``"stream": true``, model ``claude-opus-4-8`` and
``max_tokens`` 64000, side requests included: model and max_tokens tell NOTHING apart here.

* ``-p``: only main-conversation turns. No count_tokens, no quota probe, no title request (with or without
  CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC). System prompt: a billing line
  ``x-anthropic-billing-header: cc_version=2.1.197.<x>; cc_entrypoint=sdk-cli;`` then
  ``You are a Claude agent, built on Anthropic's Claude Agent SDK.``; about 24 tools.
* Interactive: the same turns (``cc_entrypoint=cli``, ``You are Claude Code, Anthropic's official CLI for
  Claude.``) plus, once per session, a **title** request sent alongside the first main request of a
  prompt that is long enough (not for "do it"): NO tools, thinking disabled, ``output_config.format`` =
  json_schema ``{"title": string}``, user text ``<session>\n<prompt>\n</session>\n\nWrite the title...``.
  Its system prompt also opens with "You are Claude Code...", so the system text alone cannot tell it apart.
* ``/compact``: a *forked* copy of the main conversation (same system prompt, same tools, to reuse the
  prompt cache) whose last user text is ``CRITICAL: Respond with TEXT ONLY...`` + ``Your task is to create
  a detailed summary of the conversation so far...``.
* Subagents (Agent tool): ``cc_is_subagent=true`` in the billing line, their own system prompt
  ("You are an agent for Claude Code...") and fewer tools. They are real model turns (they run tools and
  fire hooks with agent_id), so they go to the responder (and consume a Script entry, in arrival order)
  but are recorded as kind "subagent", not in ``main_requests()``.
* Known from the binary's query sources but not seen with this env (feature flags default off offline):
  prompt suggestions (a fork with ``[SUGGESTION MODE: ...``; ``claude_env`` also pins
  CLAUDE_CODE_ENABLE_PROMPT_SUGGESTION=false), away summary, agent progress summary, bash prefix
  extraction, hook ``prompt``/``agent`` handlers, session search...
* Message lists contain ``role: "system"`` entries (mid-conversation system prompts), and the user's text
  follows a ``<system-reminder>`` text block: the last message is not necessarily the user's.

How side requests are told apart (``auxiliary_purpose``), in order: ``max_tokens`` <= 1 (a probe);
``output_config.format`` present (structured output: title); no ``tools`` (every model turn offers tools;
side queries never do); last user text holding a known fork prompt (compact, prompt suggestion, away or
agent summary). They get ``auxiliary_reply()`` (valid JSON for a schema, a ``<summary>`` for compact, else
"OK") and never reach the responder or the Script.

Retries: the CLI retries 429/5xx itself (a 429 with ``retry-after: 0`` was retried after about 0.6 s; each
retry is a new request that takes the next Script entry). CLAUDE_CODE_MAX_RETRIES bounds that.
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
    "api_error",
    "as_blocks",
    "auxiliary_purpose",
    "auxiliary_reply",
    "default_responder",
    "is_auxiliary",
    "is_subagent",
    "last_user_is_tool_result",
    "last_user_text",
    "stop_reason_for",
    "system_text",
    "text",
    "tool_results",
    "tool_use",
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

    Returns "probe" (max_tokens 1: quota/health check), "structured" (asks for JSON via
    ``output_config.format``, e.g. the session title), "side_query" (offers no tools: title, bash-prefix
    extraction, hook prompts...), or one of the forked-agent purposes in ``_FORK_MARKERS``.
    """
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens <= 1:
        return "probe"
    if (body.get("output_config") or {}).get("format"):
        return "structured"
    if not body.get("tools"):
        return "side_query"
    said = last_user_text(body)
    for marker, purpose in _FORK_MARKERS.items():
        if marker in said:
            return purpose
    return None


def is_auxiliary(body: JSON) -> bool:
    """Whether a /v1/messages request is a side request rather than a model turn (main or subagent)."""
    return auxiliary_purpose(body) is not None


def auxiliary_reply(body: JSON) -> list[JSON]:
    """A harmless answer to a side request, shaped so that Claude Code accepts it."""
    fmt = (body.get("output_config") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        return [text(json.dumps(_sample_for_schema(fmt.get("schema") or {})))]
    if auxiliary_purpose(body) == "compact":
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
    time: the next request uses the new one.
    """

    def __init__(self, responder: Responder | None = None) -> None:
        self.responder: Responder = responder or default_responder()
        self.responder_errors: list[BaseException] = []
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
            return auxiliary_reply(body)
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
            self._answer_messages(body, self.fake.reply_for(kind, body))
        elif path == "/v1/messages/count_tokens":
            self._record(body, "count_tokens")
            self._send_json(200, {"input_tokens": _estimate_tokens(body)})
        else:
            self._record(body, "other")
            self._send_not_found()

    def _send_not_found(self) -> None:
        error = api_error(404, "not_found_error", f"fakeapi: no route for {self.command} {self.path}")
        self._send_json(404, error.body())

    def _answer_messages(self, body: JSON, reply: list[JSON] | ApiError) -> None:
        if isinstance(reply, ApiError):
            self._send_json(reply.status, reply.body(), reply.headers)
            return
        message = _message(str(body.get("model") or "claude-test"), reply)
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
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": message["usage"]["output_tokens"]},
        },
    )
    yield "message_stop", {"type": "message_stop"}
