"""ccm-agentd end to end: the real daemon process, a real tmux server on a private socket, the real claude
2.1.197 on the scripted model server. What the model server received is the proof of delivery."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.agentdrun import (
    BIN,
    Agentd,
    agentd_cli,
    ccm,
    deliveries,
    idle_session,
    said,
    session_of,
    start_in_tmux,
    wait_state,
)
from tests.claude_harness import (
    TmuxServer,
    capture,
    has_permission_dialog,
    submit,
    wait_for,
    wait_for_screen,
    wait_idle,
)
from tests.fakeapi import FakeAnthropic, Script, text, tool_use
from tests.hookrun import install_hooks, read_log

pytestmark = [pytest.mark.e2e, pytest.mark.tmux]


# watchfiles is what macOS uses (FSEvents); here it runs the same code path on Linux.
@pytest.mark.parametrize("watcher", ["inotify", "watchfiles"])
def test_a_queued_prompt_reaches_an_idle_session_exactly_once(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer, agentd: Agentd, watcher: str,
) -> None:  # fmt: skip
    install_hooks(project_dir)
    pane, sid = idle_session(tmux_server, claude_bin, project_dir, fake_api, ccm_home, "first prompt")
    agentd.env["CCM_WATCHER"] = watcher
    agentd.start()
    assert f"watching with {watcher}" in agentd.log()
    out = ccm("send", sid[:8], "the queued prompt")
    assert out.returncode == 0, out.stderr
    assert "warning" not in out.stderr
    wait_for(lambda: said(fake_api, "the queued prompt") == 1, timeout=30, what="the prompt at the model")
    wait_for(lambda: [d["outcome"] for d in deliveries(ccm_home, sid)] == ["typing", "delivered"])
    wait_idle(pane)
    time.sleep(1.0)  # nothing more may arrive
    assert said(fake_api, "the queued prompt") == 1
    assert not list((ccm_home / "queue").glob("*.json"))
    assert len(list((ccm_home / "queue" / "done").glob("*.json"))) == 1
    events = [r["event"] for r in read_log(ccm_home, sid)]
    typing = events.index("ccm.delivery")
    assert events[typing + 1 :].count("UserPromptSubmit") == 1
    status = agentd_cli("status")
    assert status.returncode == 0 and "ccm-agentd running" in status.stdout
    assert agentd.kill(signal.SIGTERM) == 0
    assert json.loads((ccm_home / "agentd" / "health.json").read_text())["state"] == "stopped"


def test_a_prompt_queued_while_the_session_works_waits_for_idle(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer, agentd: Agentd,
) -> None:  # fmt: skip
    install_hooks(project_dir)
    fake_api.responder = Script([
        [tool_use("Bash", {"command": "sleep 4", "description": "slow"})], [text("slow step done")],
    ])  # fmt: skip
    pane = start_in_tmux(tmux_server, claude_bin, project_dir, fake_api)
    agentd.start()
    submit(pane, "do the slow thing")
    sid = session_of(ccm_home)
    wait_state(ccm_home, sid, "working")
    assert ccm("send", sid, "after the slow thing").returncode == 0
    wait_for(lambda: said(fake_api, "after the slow thing") == 1, timeout=40, what="delivery after idle")
    log = read_log(ccm_home, sid)
    stop = next(r["seq"] for r in log if r["event"] == "Stop")
    typing = next(r["seq"] for r in log if r["event"] == "ccm.delivery")
    assert typing > stop  # typed only once the turn was over
    assert said(fake_api, "after the slow thing") == 1


def test_nothing_is_typed_while_a_permission_dialog_is_open(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer, agentd: Agentd,
) -> None:  # fmt: skip
    install_hooks(project_dir)
    fake_api.responder = Script([[tool_use("Bash", {"command": "echo x > perm.txt", "description": "ask"})]])
    pane = start_in_tmux(
        tmux_server, claude_bin, project_dir, fake_api, args=("--permission-mode", "default")
    )
    agentd.start()
    submit(pane, "write the file")
    wait_for_screen(pane, has_permission_dialog, what="the permission dialog")
    sid = session_of(ccm_home)
    wait_state(ccm_home, sid, "waiting")
    assert ccm("send", sid, "do not approve anything").returncode == 0
    time.sleep(3.0)  # many daemon passes (liveness every 0.5 s): none may type
    assert has_permission_dialog(capture(pane))
    assert not (project_dir / "perm.txt").exists()
    assert deliveries(ccm_home, sid) == []
    assert len(list((ccm_home / "queue").glob("*.json"))) == 1


def test_watch_max_turns_12_goes_past_claudes_cap_through_tmux(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer, agentd: Agentd,
) -> None:  # fmt: skip
    install_hooks(project_dir)
    fake_api.responder = lambda body: [text("Still going.")]
    watch_env = {"CCM_WATCH": "1", "CCM_WATCH_MAX_TURNS": "12", "CCM_WATCH_NO_PROGRESS": "50"}
    pane = start_in_tmux(tmux_server, claude_bin, project_dir, fake_api, extra=watch_env)
    agentd.start()
    submit(pane, "keep going")
    sid = session_of(ccm_home)

    def decisions() -> list[dict[str, Any]]:
        return [r["decision"] for r in read_log(ccm_home, sid) if r["event"] == "ccm.decision"]

    wait_for(lambda: decisions() and decisions()[-1]["action"] == "stop", timeout=90, what="the run to end")
    actions = [(d["action"], d["turn"]) for d in decisions()]
    assert actions == [("continue", n) for n in range(1, 9)] + [("handoff", 9)] + [
        ("continue", n) for n in (10, 11, 12)
    ] + [("stop", 12)]
    assert decisions()[-1]["reason"] == "max_turns"
    assert said(fake_api, "Stop hook feedback:\ncontinue") == 11
    assert said(fake_api, "continue") == 1  # the 9th, typed into the pane
    assert [d["outcome"] for d in deliveries(ccm_home, sid)] == ["typing", "delivered"]


def test_a_killed_pane_becomes_ended_lost(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer, agentd: Agentd,
) -> None:  # fmt: skip
    install_hooks(project_dir)
    pane, sid = idle_session(tmux_server, claude_bin, project_dir, fake_api, ccm_home, "hello")
    agentd.start()
    # Killed hard, claude fires no SessionEnd (a plain kill-pane gets one: SIGHUP is handled).
    pid = int(tmux_server.run("display-message", "-p", "-t", pane.pane_id, "#{pane_pid}").stdout)
    os.kill(pid, signal.SIGKILL)
    st = wait_state(ccm_home, sid, "ended", timeout=20)
    assert st["reason"].startswith("lost: ")
    assert read_log(ccm_home, sid)[-1]["event"] == "ccm.state"


def test_sigkill_mid_delivery_then_restart_delivers_exactly_once(
    claude_bin: str, fake_api: FakeAnthropic, project_dir: Path, ccm_home: Path,
    tmux_server: TmuxServer, agentd: Agentd,
) -> None:  # fmt: skip
    install_hooks(project_dir)
    pane, sid = idle_session(tmux_server, claude_bin, project_dir, fake_api, ccm_home, "first")
    agentd.start()
    assert ccm("send", sid, "only once please").returncode == 0
    # Kill the daemon the moment its typing record is in the log: mid-delivery.
    wait_for(lambda: any(d["outcome"] == "typing" for d in deliveries(ccm_home, sid)), interval=0.002)
    agentd.kill(signal.SIGKILL)
    again = agentd.make().start()  # type: ignore[attr-defined]
    wait_for(lambda: deliveries(ccm_home, sid)[-1]["outcome"] in ("delivered", "unconfirmed"), timeout=60)
    wait_idle(pane)
    time.sleep(1.0)
    assert said(fake_api, "only once please") == 1
    assert [d["outcome"] for d in deliveries(ccm_home, sid)] in (
        ["typing", "delivered"],
        ["typing", "retry", "typing", "delivered"],  # killed before the keys were sent
    )
    assert again.kill(signal.SIGTERM) == 0


def test_one_daemon_per_state_dir_and_sd_notify(ccm_home: Path, tmp_path: Path, agentd: Agentd) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(10)
    agentd.env.update(NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="400000")
    agentd.start()
    got = []
    while "WATCHDOG=1" not in got or "READY=1" not in got:
        got.append(sock.recv(4096).decode())
    assert got.index("READY=1") <= got.index("WATCHDOG=1")
    second = subprocess.run([str(BIN / "ccm-agentd"), "run"], capture_output=True, text=True, timeout=30)
    assert second.returncode == 1 and "another ccm-agentd" in second.stderr
    assert second.stderr.count("\n") == 1
    assert agentd.proc is not None
    agentd.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: agentd.log().count("config loaded") == 2, what="a reload")
    assert agentd.kill(signal.SIGTERM) == 0
    seen = []
    while (message := sock.recv(4096).decode()) != "STOPPING=1":
        seen.append(message.split("\n")[0])
    assert "RELOADING=1" in seen and seen.index("RELOADING=1") < len(seen) - 1 - seen[::-1].index("READY=1")
    sock.close()
    status = agentd_cli("status")
    assert status.returncode == 1 and "not running" in status.stderr
