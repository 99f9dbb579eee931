"""Fixtures and helpers that drive the REAL ``claude`` CLI offline, headless or in tmux, on every supported
version (``SUPPORTED_VERSIONS``).

Usage sketch::

    @pytest.mark.e2e
    def test_x(claude_bin, fake_api, project_dir):
        fake_api.responder = Script([[tool_use("Bash", {"command": "echo hi > out.txt"})]])
        done = run_claude_p(claude_bin, project_dir, "go", claude_env(fake_api))
        assert done.returncode == 0

    @pytest.mark.e2e
    @pytest.mark.tmux
    def test_y(claude_bin, fake_api, project_dir, tmux_server):
        pane = start_claude(tmux_server, claude_bin, project_dir, claude_env(fake_api))
        wait_idle(pane)
        submit(pane, "hello")
        wait_for_screen(pane, lambda s: "Hi there." in s and is_idle(s), what="reply, then idle")

Everything a helper waits for is polled against a deadline; a timeout raises :class:`WaitTimeout` (an
AssertionError) carrying the last screen, so a failing test shows what the TUI was doing.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

from ccm_agentd import screen
from tests.fakeapi import FakeAnthropic

__all__ = [
    "ASKING_PERMISSION_MODE",
    "CLAUDE_VERSION",
    "DEFAULT_PERMISSION_MODE",
    "SUPPORTED_VERSIONS",
    "TEST_API_KEY",
    "Pane",
    "TmuxServer",
    "WaitTimeout",
    "capture",
    "claude_bin",
    "claude_env",
    "claude_version",
    "fake_api",
    "find_claude",
    "has_permission_dialog",
    "input_line",
    "is_idle",
    "is_working",
    "project_dir",
    "run_claude_p",
    "seed_claude_json",
    "send_keys",
    "send_text",
    "start_claude",
    "submit",
    "tmux_bin",
    "tmux_server",
    "wait_for",
    "wait_for_screen",
    "wait_idle",
    "write_settings",
]

TESTS_DIR = Path(__file__).resolve().parent
# Any key works against the fake server; seed_claude_json pre-approves its last 20 characters so the
# TUI does not ask "Do you want to use this API key?".
TEST_API_KEY = "sk-test-ccm-harness-0123456789abcdef"

T = TypeVar("T")


def _unavailable(message: str) -> NoReturn:
    """In CI a missing tool is a failure (a skip would hide that nothing ran); locally it is a skip."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# --- locating the tools ---------------------------------------------------------------------------------

# Every supported Claude Code version, newest first (spec/claude-versions.md). The newest is pinned in
# tests/package.json, each older one in tests/claude-<version>/package.json; install/dev-setup.sh installs
# them all. Tests that take ``claude_bin`` run once per version; CCM_TEST_CLAUDE_VERSIONS=2.1.328 (a comma
# list) narrows that for a quick local run.
SUPPORTED_VERSIONS = ("2.1.328", "2.1.197")
CLAUDE_VERSION = SUPPORTED_VERSIONS[0]

# What each version does without --permission-mode, and the mode that asks before a tool runs (a permission
# dialog), as --help lists it. 2.1.328 starts interactive sessions in "auto" (the safety check decides, no
# dialog; -p still starts in "default") and renamed the asking mode "manual" ("default" is still accepted);
# hook payloads say "default" for it on both versions.
DEFAULT_PERMISSION_MODE = {"2.1.328": "auto", "2.1.197": "default"}
ASKING_PERMISSION_MODE = {"2.1.328": "manual", "2.1.197": "default"}


def selected_versions() -> list[str]:
    wanted = [v.strip() for v in os.environ.get("CCM_TEST_CLAUDE_VERSIONS", "").split(",") if v.strip()]
    unknown = [v for v in wanted if v not in SUPPORTED_VERSIONS]
    if unknown:
        raise pytest.UsageError(f"CCM_TEST_CLAUDE_VERSIONS names {unknown}; supported: {SUPPORTED_VERSIONS}")
    return wanted or list(SUPPORTED_VERSIONS)


def version_dir(version: str) -> Path:
    """Where npm installs that version: tests/ for the newest, tests/claude-<version>/ for the others."""
    return TESTS_DIR if version == SUPPORTED_VERSIONS[0] else TESTS_DIR / f"claude-{version}"


def find_claude(version: str = CLAUDE_VERSION) -> str | None:
    """The installed claude of ``version`` (see version_dir), else $CCM_TEST_CLAUDE for the newest."""
    local = version_dir(version) / "node_modules" / ".bin" / "claude"
    if local.exists():
        return str(local)
    override = os.environ.get("CCM_TEST_CLAUDE")
    return override if override and version == SUPPORTED_VERSIONS[0] else None


def claude_version_of(path: str, home: Path) -> str:
    """What ``path --version`` says (``2.1.328``), run with a scratch HOME."""
    out = subprocess.run(
        [path, "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "DISABLE_AUTOUPDATER": "1"},
        stdin=subprocess.DEVNULL,
    )
    words = (out.stdout.strip().splitlines() or [""])[0].split()
    return words[0] if out.returncode == 0 and words else ""


@pytest.fixture(scope="session", params=selected_versions())
def claude_version(request: pytest.FixtureRequest) -> str:
    """The Claude Code version this test runs against: every test that uses claude runs on each."""
    return str(request.param)


@pytest.fixture(scope="session")
def claude_bin(claude_version: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of the claude CLI of ``claude_version``, checked to really be that version."""
    where = version_dir(claude_version).relative_to(TESTS_DIR.parent)
    how = f"install it with `sh install/dev-setup.sh` (npm install --prefix {where})"
    path = find_claude(claude_version)
    if path is None:
        _unavailable(f"claude {claude_version} not found: {how}")
    # A scratch HOME: even --version may create ~/.claude, and this runs before private_home applies.
    try:
        found = claude_version_of(path, tmp_path_factory.mktemp("claude-version-home"))
    except (OSError, subprocess.TimeoutExpired) as exc:
        _unavailable(f"cannot run {path} --version ({exc}): {how}")
    if found != claude_version:
        _unavailable(f"{path} is version {found!r}, not {claude_version}: {how}")
    return path


@pytest.fixture(scope="session")
def tmux_bin() -> str:
    path = shutil.which("tmux")
    if path is None:
        _unavailable("tmux not found: install it (apt-get install tmux)")
    return path


# --- the fake API and the environment -------------------------------------------------------------------


@pytest.fixture
def fake_api() -> Iterator[FakeAnthropic]:
    """A started fake Messages API with the default rule-based responder; set ``.responder`` to script it."""
    with FakeAnthropic() as api:
        yield api


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """An empty scratch project directory (not under HOME, like a real checkout)."""
    path = tmp_path / "project"
    path.mkdir()
    return path


def claude_env(
    api: FakeAnthropic | str,
    extra: Mapping[str, str] | None = None,
    *,
    home: Path | str | None = None,
    api_key: str = TEST_API_KEY,
    subscription: bool = False,
) -> dict[str, str]:
    """The complete environment for a claude process talking to ``api`` (a server or a base URL).

    Built from scratch rather than from os.environ so that a developer's own ANTHROPIC_* / CLAUDE_* settings
    (or running the tests from inside Claude Code: CLAUDECODE, CLAUDE_CODE_ENTRYPOINT...) cannot leak in.
    HOME and CCM_HOME come from the test's private_home fixture.

    ``subscription`` signs in as a claude.ai subscriber (CLAUDE_CODE_OAUTH_TOKEN, no API key) instead: what
    a usage limit looks like, and 2.1.328's own continue after its reset, depend on it (fakeapi.usage_limit).
    """
    base_url = api if isinstance(api, str) else api.base_url
    home = str(home or os.environ["HOME"])
    # The venv's bin first, so hooks can call the project's console scripts (ccm-hook...).
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")])
    env = {
        "PATH": path,
        "HOME": home,
        "SHELL": os.environ.get("SHELL", "/bin/sh"),
        "LANG": "C.UTF-8",
        "TERM": os.environ.get("TERM", "xterm-256color"),
        "ANTHROPIC_BASE_URL": base_url,
        # No telemetry, error reporting, update checks or feature-flag fetches: all would hit the network.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        # --dangerously-skip-permissions is refused as root unless the CLI believes it is sandboxed.
        "IS_SANDBOX": "1",
        # Prompt suggestions: a feature-flagged side request after each turn; off for determinism.
        "CLAUDE_CODE_ENABLE_PROMPT_SUGGESTION": "false",
    }
    if subscription:
        env["CLAUDE_CODE_OAUTH_TOKEN"] = "sk-ant-oat01-ccm-test-token"
    else:
        env["ANTHROPIC_API_KEY"] = api_key
    if "CCM_HOME" in os.environ:
        env["CCM_HOME"] = os.environ["CCM_HOME"]
    if "TMPDIR" in os.environ:
        env["TMPDIR"] = os.environ["TMPDIR"]
    env.update(extra or {})
    return env


def seed_claude_json(
    home: Path | str,
    project_dir: Path | str,
    api_key: str = TEST_API_KEY,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write $HOME/.claude.json so the TUI starts straight at the prompt: no onboarding, theme picker,
    API-key approval, folder-trust or bypass-permissions dialogs. Merges into an existing file."""
    path = Path(home) / ".claude.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    data.update(
        {
            "hasCompletedOnboarding": True,
            "theme": "dark",
            "bypassPermissionsModeAccepted": True,
            "customApiKeyResponses": {"approved": [api_key[-20:]], "rejected": []},
        }
    )
    projects = data.setdefault("projects", {})
    # Claude keys projects by the real path; add the given spelling too in case a symlink is involved.
    for spelling in {str(Path(project_dir)), str(Path(project_dir).resolve())}:
        projects.setdefault(spelling, {}).update(
            {"hasTrustDialogAccepted": True, "hasCompletedProjectOnboarding": True}
        )
    data.update(extra or {})
    path.write_text(json.dumps(data, indent=2))
    return path


def write_settings(project_dir: Path | str, settings: Mapping[str, Any], *, local: bool = False) -> Path:
    """Write <project>/.claude/settings.json (or settings.local.json) with the given content."""
    path = Path(project_dir) / ".claude" / ("settings.local.json" if local else "settings.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2))
    return path


def run_claude_p(
    claude_bin: str,
    project_dir: Path | str,
    prompt: str,
    env: Mapping[str, str],
    extra_args: Sequence[str] = (),
    timeout: float = 60,
    *,
    skip_permissions: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``claude -p PROMPT`` headless in ``project_dir``; output is captured as text.

    stdin is /dev/null: with a pipe or a terminal there, -p would wait to read extra input from it.
    """
    args = [claude_bin, "-p", prompt]
    if skip_permissions:
        args.append("--dangerously-skip-permissions")
    args.extend(extra_args)
    return subprocess.run(
        args,
        cwd=project_dir,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


# --- polling --------------------------------------------------------------------------------------------


class WaitTimeout(AssertionError):
    """A wait_for deadline passed. An AssertionError so pytest reports it as a plain test failure."""


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 30.0,
    interval: float = 0.1,
    *,
    what: str = "condition",
    diagnostics: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that; raise WaitTimeout at the
    deadline with ``diagnostics()`` (e.g. the last screen) in the message. Checks once more at the end so a
    slow last poll cannot lose a success."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    detail = ""
    if diagnostics is not None:
        try:
            detail = "\n" + diagnostics()
        except Exception as exc:  # diagnostics must never mask the timeout itself
            detail = f"\n(diagnostics failed: {exc!r})"
    raise WaitTimeout(f"timed out after {timeout}s waiting for {what}{detail}")


# --- tmux -----------------------------------------------------------------------------------------------


@dataclass
class TmuxServer:
    """A private tmux server (``tmux -L <socket>``) with a pinned HOME/SHELL and no user config."""

    tmux_bin: str
    socket_name: str
    config_file: Path
    env: dict[str, str]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.tmux_bin, "-L", self.socket_name, "-f", str(self.config_file), *args],
            capture_output=True,
            text=True,
            env=self.env,
            check=check,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )

    @property
    def socket_path(self) -> Path:
        # self.env carries no TMUX_TMPDIR, so tmux puts its socket in /tmp/tmux-<uid>/.
        return Path("/tmp") / f"tmux-{os.getuid()}" / self.socket_name

    def kill(self) -> None:
        """Kill the server and its panes; also remove the socket file, which kill-server leaves behind."""
        self.run("kill-server", check=False)
        self.socket_path.unlink(missing_ok=True)


# The config every test server starts with. remain-on-exit keeps a crashed claude's last screen readable;
# focus-events on silences Claude's "tmux focus-events off" footer hint; a big history keeps transcripts.
_TMUX_CONF = """\
set -g remain-on-exit on
set -g focus-events on
set -g history-limit 10000
set -g status off
"""


@pytest.fixture
def tmux_server(tmux_bin: str, tmp_path: Path) -> Iterator[TmuxServer]:
    """Each test gets its own tmux server on a unique socket, killed afterwards even if the test fails."""
    home = tmp_path / "tmux-home"
    home.mkdir(exist_ok=True)
    conf = tmp_path / "tmux.conf"
    conf.write_text(_TMUX_CONF)
    env = {
        "HOME": str(home),
        "SHELL": "/bin/sh",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        # tmux decides from the locale whether the client speaks UTF-8; captures must keep "❯" and rules.
        "LANG": "C.UTF-8",
        "TERM": "xterm-256color",
    }
    server = TmuxServer(tmux_bin, f"ccm-test-{secrets.token_hex(6)}", conf, env)
    try:
        yield server
    finally:
        server.kill()


@dataclass
class Pane:
    """A tmux pane on a TmuxServer, addressed by its unique id (``%N``)."""

    server: TmuxServer
    pane_id: str

    def capture(self) -> str:
        return capture(self)

    def dead(self) -> bool:
        """Whether the process in the pane exited (the pane stays thanks to remain-on-exit)."""
        out = self.server.run("display-message", "-p", "-t", self.pane_id, "#{pane_dead}", check=False)
        return out.returncode != 0 or out.stdout.strip() == "1"

    def describe(self) -> str:
        """The pane's state for failure messages: dead or alive, then the current screen."""
        status = self.server.run(
            "display-message",
            "-p",
            "-t",
            self.pane_id,
            "dead=#{pane_dead} status=#{pane_dead_status}",
            check=False,
        ).stdout.strip()
        return f"--- pane {self.pane_id} ({status}) ---\n{capture(self)}\n--- end of pane ---"


def start_claude(
    server: TmuxServer,
    claude_bin: str,
    project_dir: Path | str,
    env: Mapping[str, str],
    args: Sequence[str] = ("--dangerously-skip-permissions",),
    *,
    width: int = 200,
    height: int = 50,
    session_name: str | None = None,
    seed: bool = True,
) -> Pane:
    """Start interactive claude in a new detached tmux session and return its pane (not waiting for it).

    ``seed`` writes $HOME/.claude.json (see seed_claude_json) for env's HOME first. The process gets
    exactly ``env`` on top of the server's pinned environment; under tmux it also sees TMUX and TMUX_PANE.
    Several claudes may share one server: each gets its own session (``session_name`` or a random one).
    """
    session_name = session_name or f"claude-{secrets.token_hex(3)}"
    if seed:
        seed_claude_json(env["HOME"], project_dir, env.get("ANTHROPIC_API_KEY", TEST_API_KEY))
    env_args = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    # With arguments, tmux execs the command words directly (no shell, no quoting issues); a lone path
    # goes through `$SHELL -c`, which is harmless for a path.
    out = server.run(
        "new-session", "-d", "-P", "-F", "#{pane_id}",
        "-s", session_name, "-x", str(width), "-y", str(height), "-c", str(project_dir),
        *env_args,
        claude_bin, *args,
    )  # fmt: skip
    return Pane(server, out.stdout.strip())


def capture(pane: Pane, *, history: bool = False) -> str:
    """The pane's visible screen as plain text (``capture-pane -p``); ``history`` adds the scrollback."""
    args = ["capture-pane", "-p", "-t", pane.pane_id]
    if history:
        args[2:2] = ["-S", "-"]
    return pane.server.run(*args).stdout


def send_keys(pane: Pane, *keys: str) -> None:
    """Send tmux key names (``Enter``, ``Escape``, ``C-c``, ``Down``...)."""
    pane.server.run("send-keys", "-t", pane.pane_id, *keys)


def send_text(pane: Pane, text: str) -> None:
    """Type ``text`` literally, then press Enter as a separate key event.

    One combined send-keys would deliver the Enter inside the same burst, which Claude's input may take as
    part of a paste instead of a submit.
    """
    pane.server.run("send-keys", "-t", pane.pane_id, "-l", text)
    send_keys(pane, "Enter")


def wait_for_screen(
    pane: Pane,
    predicate: Callable[[str], object],
    timeout: float = 30.0,
    *,
    what: str = "screen condition",
    interval: float = 0.1,
) -> str:
    """Poll the pane until ``predicate(screen)`` is truthy and return that screen. Fails fast if the
    process in the pane died, and reports the last screen on timeout."""

    def check() -> str | None:
        screen = capture(pane)
        if predicate(screen):
            return screen
        if pane.dead():
            raise WaitTimeout(f"claude exited while waiting for {what}\n{pane.describe()}")
        return None

    return wait_for(check, timeout, interval, what=what, diagnostics=pane.describe)


# --- reading the TUI ------------------------------------------------------------------------------------

# Reading the screen is production code (ccm-agentd decides from it whether a pane is idle): the tests use
# exactly the same rules.
input_line = screen.input_line
is_working = screen.is_working
has_permission_dialog = screen.has_dialog
is_idle = screen.is_idle


def wait_idle(pane: Pane, timeout: float = 60.0) -> str:
    """Wait until the TUI is idle with an empty input box; returns the screen."""
    return wait_for_screen(pane, is_idle, timeout, what="claude to be idle (empty ❯ input box)")


def submit(pane: Pane, text: str, timeout: float = 30.0) -> None:
    """Type a prompt into an idle TUI and submit it, confirming each step on screen.

    Waits for idle, types the text, waits until the input box shows it (keys sent before the input handler
    is ready would be lost silently), presses Enter, then waits until the box is empty again or a turn or
    dialog started, i.e. the prompt was taken.
    """
    wait_idle(pane, timeout)
    pane.server.run("send-keys", "-t", pane.pane_id, "-l", text)
    # The box may wrap or elide a long text: compare a prefix, whitespace-normalised.
    head = " ".join(text.split())[:30]
    wait_for_screen(
        pane,
        lambda s: head in " ".join((input_line(s) or "").split()),
        timeout,
        what=f"input box to show {head!r}",
    )
    send_keys(pane, "Enter")
    wait_for_screen(
        pane,
        lambda s: input_line(s) == "" or is_working(s) or has_permission_dialog(s),
        timeout,
        what="the prompt to be submitted",
    )
