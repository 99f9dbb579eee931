"""Smoke tests proving the e2e harness drives the real claude CLI: headless, with hooks, and in tmux."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.claude_harness import (
    ASKING_PERMISSION_MODE,
    DEFAULT_PERMISSION_MODE,
    Pane,
    TmuxServer,
    capture,
    claude_env,
    has_permission_dialog,
    input_line,
    is_idle,
    run_claude_p,
    start_claude,
    submit,
    wait_for_screen,
    wait_idle,
    write_settings,
)
from tests.fakeapi import (
    FakeAnthropic,
    Script,
    always,
    api_error,
    default_responder,
    text,
    tool_results,
    tool_use,
    usage_limit,
)


def bash(command: str) -> dict[str, Any]:
    return tool_use("Bash", {"command": command, "description": "test step"})


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- headless (-p) -------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_p_runs_a_bash_tool_use(claude_bin: str, fake_api: FakeAnthropic, project_dir: Path) -> None:
    call = bash("echo hi > out.txt")
    fake_api.responder = Script([[call]])

    done = run_claude_p(claude_bin, project_dir, "write the file", claude_env(fake_api))

    assert done.returncode == 0, done.stderr
    assert (project_dir / "out.txt").read_text() == "hi\n"
    first, follow_up = fake_api.main_requests()
    assert first.last_user_text == "write the file"
    assert [r["tool_use_id"] for r in tool_results(follow_up.body)] == [call["id"]]
    assert "All done." in done.stdout  # the default responder's answer to a tool_result


@pytest.mark.e2e
def test_p_runs_parallel_tool_uses(claude_bin: str, fake_api: FakeAnthropic, project_dir: Path) -> None:
    calls = [bash("echo a > a.txt"), bash("echo b > b.txt")]
    fake_api.responder = Script([calls])

    done = run_claude_p(claude_bin, project_dir, "write both", claude_env(fake_api))

    assert done.returncode == 0, done.stderr
    assert (project_dir / "a.txt").read_text() == "a\n"
    assert (project_dir / "b.txt").read_text() == "b\n"
    follow_up = fake_api.main_requests()[1]
    assert {r["tool_use_id"] for r in tool_results(follow_up.body)} == {c["id"] for c in calls}


@pytest.mark.e2e
def test_hooks_receive_payloads(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, tmp_path: Path
) -> None:
    pre, stop = tmp_path / "pre.jsonl", tmp_path / "stop.jsonl"
    # The payload arrives as one line without a guaranteed newline: add one so the file is JSON Lines.
    write_settings(
        project_dir,
        {
            "hooks": {
                "PreToolUse": [
                    {
                        "matcher": "Bash",
                        "hooks": [{"type": "command", "command": f"cat >> {pre}; echo >> {pre}"}],
                    }
                ],
                "Stop": [{"hooks": [{"type": "command", "command": f"cat >> {stop}; echo >> {stop}"}]}],
            }
        },
    )
    fake_api.responder = Script([[bash("echo hi > out.txt")]])

    done = run_claude_p(claude_bin, project_dir, "go", claude_env(fake_api))

    assert done.returncode == 0, done.stderr
    [pre_payload] = read_jsonl(pre)
    [stop_payload] = read_jsonl(stop)
    assert pre_payload["hook_event_name"] == "PreToolUse"
    assert pre_payload["tool_input"]["command"] == "echo hi > out.txt"
    assert Path(pre_payload["cwd"]).resolve() == project_dir.resolve()
    assert stop_payload["hook_event_name"] == "Stop"
    assert stop_payload["last_assistant_message"] == "All done."
    assert stop_payload["session_id"] == pre_payload["session_id"]


@pytest.mark.e2e
def test_stop_hook_feedback_is_the_last_user_text(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, tmp_path: Path
) -> None:
    flag = tmp_path / "blocked-once"
    block_once = (
        f'test -e {flag} || {{ touch {flag}; echo \'{{"decision":"block","reason":"keep going"}}\'; }}'
    )
    write_settings(
        project_dir, {"hooks": {"Stop": [{"hooks": [{"type": "command", "command": block_once}]}]}}
    )

    done = run_claude_p(claude_bin, project_dir, "hello", claude_env(fake_api))

    assert done.returncode == 0, done.stderr
    assert [r.last_user_text for r in fake_api.main_requests()] == [
        "hello",
        "Stop hook feedback:\nkeep going",
    ]


@pytest.mark.e2e
def test_api_errors_reach_the_cli(claude_bin: str, fake_api: FakeAnthropic, project_dir: Path) -> None:
    env = claude_env(fake_api)
    # Every attempt fails: 2.1.328 sends a turn refused with a 400 again, with fewer betas (2.1.197 does not).
    fake_api.responder = always(api_error(400, "invalid_request_error", "bad thing"))
    failed = run_claude_p(claude_bin, project_dir, "hello", env)
    assert failed.returncode == 1
    assert failed.stdout == "API Error: 400 bad thing\n"
    attempts = fake_api.main_requests()
    assert attempts and all(r.last_user_text == "hello" for r in attempts)

    # A 429 is retried by the CLI; the retry takes the next scripted reply.
    fake_api.responder = Script(
        [api_error(429, "rate_limit_error", "slow down", {"retry-after": "0"}), [text("Recovered.")]]
    )
    recovered = run_claude_p(claude_bin, project_dir, "hello", env)
    assert recovered.returncode == 0, recovered.stderr
    assert "Recovered." in recovered.stdout


@pytest.mark.e2e
def test_usage_limit_wording_depends_on_the_login(
    claude_bin: str, claude_version: str, fake_api: FakeAnthropic, project_dir: Path
) -> None:
    fake_api.responder = always(usage_limit(int(time.time()) + 3600))
    no_retries = {"CLAUDE_CODE_MAX_RETRIES": "0"}

    api_key = run_claude_p(claude_bin, project_dir, "hello", claude_env(fake_api, no_retries))
    subscriber = run_claude_p(
        claude_bin, project_dir, "hello", claude_env(fake_api, no_retries, subscription=True)
    )

    assert api_key.returncode == subscriber.returncode == 1
    assert api_key.stdout.startswith("API Error: Request rejected (429) · This request would exceed")
    limit = "session" if claude_version == "2.1.197" else "5-hour"  # then "resets 1:23am (UTC)", local time
    assert re.fullmatch(rf"You've hit your {limit} limit · resets \S+ \(\S+\)\n", subscriber.stdout)


@pytest.mark.e2e
@pytest.mark.parametrize("verdict", ["not_flagged", "flagged"])
def test_auto_mode_safety_check_answers(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, verdict: str
) -> None:
    # A command that acceptEdits mode would not allow, so the safety check is asked: by a side request on
    # 2.1.197, in the main request's safeguard_results on 2.1.328.
    fake_api.auto_mode_verdict = verdict
    fake_api.responder = Script([[bash("python3 -c \"open('out.txt', 'w').write('hi')\"")]])

    done = run_claude_p(
        claude_bin,
        project_dir,
        "go",
        claude_env(fake_api),
        ["--permission-mode", "auto"],
        skip_permissions=False,
    )

    assert done.returncode == 0, done.stderr
    assert (project_dir / "out.txt").exists() == (verdict == "not_flagged")
    [result] = tool_results(fake_api.main_requests()[-1].body)
    assert bool(result.get("is_error")) == (verdict == "flagged")
    assert [r.last_user_text for r in fake_api.main_requests()] == ["go", ""]


# --- interactive (tmux) ---------------------------------------------------------------------------------


def _start(server: TmuxServer, claude_bin: str, project_dir: Path, api: FakeAnthropic, **kw: Any) -> Pane:
    pane = start_claude(server, claude_bin, project_dir, claude_env(api), **kw)
    wait_idle(pane)
    return pane


@pytest.mark.e2e
@pytest.mark.tmux
def test_tui_prompt_reply_idle(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, tmux_server: TmuxServer
) -> None:
    pane = _start(tmux_server, claude_bin, project_dir, fake_api)

    submit(pane, "hello from the test")

    screen = wait_for_screen(pane, lambda s: "Hi there." in s and is_idle(s), what="the reply, then idle")
    assert "❯ hello from the test" in screen  # the prompt stays in the transcript
    assert [r.last_user_text for r in fake_api.main_requests()] == ["hello from the test"]


@pytest.mark.e2e
@pytest.mark.tmux
def test_tui_permission_dialog(
    claude_bin: str, claude_version: str, fake_api: FakeAnthropic, project_dir: Path, tmux_server: TmuxServer
) -> None:
    fake_api.responder = Script([[bash("echo hi > out.txt")]])
    # The mode that asks ("manual" on 2.1.328, whose TUI defaults to auto mode: no dialog).
    mode = ASKING_PERMISSION_MODE[claude_version]
    pane = _start(tmux_server, claude_bin, project_dir, fake_api, args=("--permission-mode", mode))

    submit(pane, "please write the file")

    screen = wait_for_screen(pane, has_permission_dialog, what="the permission dialog")
    assert input_line(screen) is None
    assert not is_idle(screen)
    assert not (project_dir / "out.txt").exists()
    assert "echo hi > out.txt" in capture(pane)


@pytest.mark.e2e
@pytest.mark.tmux
def test_tui_default_permission_mode(
    claude_bin: str,
    claude_version: str,
    fake_api: FakeAnthropic,
    project_dir: Path,
    tmux_server: TmuxServer,
    tmp_path: Path,
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    write_settings(
        project_dir,
        {
            "hooks": {
                "UserPromptSubmit": [
                    {"hooks": [{"type": "command", "command": f"cat >> {prompts}; echo >> {prompts}"}]}
                ]
            }
        },
    )
    pane = _start(tmux_server, claude_bin, project_dir, fake_api, args=())

    submit(pane, "hello")

    wait_for_screen(pane, lambda s: "Hi there." in s and is_idle(s), what="the reply, then idle")
    [payload] = read_jsonl(prompts)
    assert payload["permission_mode"] == DEFAULT_PERMISSION_MODE[claude_version]


# --- the fake server alone (no CLI) ---------------------------------------------------------------------


def _post(api: FakeAnthropic, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        api.base_url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_fakeapi_plain_json_count_tokens_and_unknown_routes() -> None:
    keywords = {"weather": [text("Sunny.")]}
    with FakeAnthropic(default_responder(keywords)) as api:
        user = {"role": "user", "content": "what is the weather?"}
        status, message = _post(api, "/v1/messages", {"model": "m-1", "messages": [user], "tools": [{}]})
        assert (status, message["model"], message["content"]) == (200, "m-1", [text("Sunny.")])
        assert message["stop_reason"] == "end_turn"

        status, counted = _post(api, "/v1/messages/count_tokens", {"messages": [user]})
        assert status == 200 and counted["input_tokens"] > 0

        status, error = _post(api, "/v2/nothing", {})
        assert status == 404 and error["error"]["type"] == "not_found_error"

        assert [r.kind for r in api.requests] == ["main", "count_tokens", "other"]
