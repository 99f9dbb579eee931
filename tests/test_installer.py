"""ccm-hooks install / uninstall on real files: merging, idempotence, exact restore, refusals, locking."""

from __future__ import annotations

import difflib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ccm_hooks import paths
from ccm_hooks.commands import installer, settings_merge
from ccm_hooks.errors import CcmError

SETTINGS_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "settings"
FIXTURE_NAMES = sorted(p.name for p in SETTINGS_FIXTURES.glob("*.json"))
CLI = shutil.which("ccm-hooks", path=os.path.dirname(sys.executable)) or "ccm-hooks"
N_EVENTS = len(settings_merge.EVENTS)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    p = tmp_path / "proj"
    p.mkdir()
    return p


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def put(project: Path, fixture: str, name: str = "settings.json") -> Path:
    path = project / ".claude" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes((SETTINGS_FIXTURES / fixture).read_bytes())
    return path


def ordered(text: str) -> Any:
    """Parse keeping key order visible (objects become lists of pairs), so order changes fail equality."""
    return json.loads(text, object_pairs_hook=list) if text.strip() else []


def strip_ours(doc: Any) -> Any:
    """Drop handlers whose command carries the marker, and emptied containers (not using settings_merge)."""
    doc = json.loads(json.dumps(doc))
    hooks = doc.get("hooks", {})
    for event in list(hooks):
        groups = []
        for group in hooks[event]:
            kept = [h for h in group["hooks"] if "#ccm-hooks" not in str(h.get("command", ""))]
            if kept:
                groups.append({**group, "hooks": kept})
        if groups:
            hooks[event] = groups
        else:
            del hooks[event]
    if "hooks" in doc and not doc["hooks"]:
        del doc["hooks"]
    return doc


def our_commands(doc: dict[str, Any]) -> dict[str, list[str]]:
    return {
        event: [h["command"] for g in groups for h in g["hooks"] if settings_merge.is_ours(h)]
        for event, groups in doc.get("hooks", {}).items()
        if any(settings_merge.is_ours(h) for g in groups for h in g["hooks"])
    }


def backups(ccm_home: Path) -> list[Path]:
    return sorted(p for p in (ccm_home / "backups").rglob("*.json") if p.name != "original.json")


# --- the shape of what we write -------------------------------------------------------------------


def test_install_creates_settings_with_one_group_per_event(project: Path, ccm_home: Path) -> None:
    assert installer.install_cmd("project", project, False) == 0
    path = project / ".claude" / "settings.json"
    doc = json.loads(path.read_text())
    assert list(doc["hooks"]) == list(settings_merge.EVENTS)
    for event, groups in doc["hooks"].items():
        assert len(groups) == 1
        assert groups[0] == settings_merge.our_group(event)
        assert ("matcher" in groups[0]) == (event in settings_merge.TOOL_EVENTS)
        handler = groups[0]["hooks"][0]
        assert handler["timeout"] == 10 and handler["command"].endswith(f" {event}; exit 0 #ccm-hooks")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text().endswith("}\n") and path.read_text().startswith('{\n  "hooks"')
    assert (ccm_home / "bin" / "ccm-hook").exists()


def test_command_names_no_absolute_path() -> None:
    for event in settings_merge.EVENTS:
        cmd = settings_merge.hook_command(event)
        assert "/work" not in cmd and sys.executable not in cmd and "/home" not in cmd
        assert settings_merge.is_ours({"type": "command", "command": cmd})


@pytest.mark.parametrize(
    "command",
    [
        "ccm-hook PreToolUse",  # mentions the shim, no marker
        "echo '#ccm-hooks'",  # marker, no shim
        "~/.ccm/bin/ccm-hook-extra PreToolUse #ccm-hooks-other",
        "logger ccm-hook; echo done",
    ],
)
def test_foreign_commands_are_not_ours(command: str) -> None:
    assert not settings_merge.is_ours({"type": "command", "command": command})


def test_marker_recognised_with_trailing_whitespace_and_other_shapes() -> None:
    assert settings_merge.is_ours({"command": '"$HOME/.ccm/bin/ccm-hook" Stop #ccm-hooks  \n'})
    assert not settings_merge.is_ours({"command": 42})
    assert not settings_merge.is_ours("bin/ccm-hook #ccm-hooks")


# --- merging real-world files ---------------------------------------------------------------------


@pytest.mark.parametrize("fixture", FIXTURE_NAMES)
def test_install_keeps_every_foreign_setting_in_order(project: Path, fixture: str) -> None:
    path = put(project, fixture)
    before = path.read_text("utf-8")
    assert installer.install_cmd("project", project, False) == 0
    after = path.read_text("utf-8")
    doc = json.loads(after)
    assert ordered(json.dumps(strip_ours(doc))) == ordered(before or "{}")
    assert set(our_commands(doc)) == set(settings_merge.EVENTS)
    # Foreign handlers on our events are still first, untouched; ours come after them.
    for event, groups in json.loads(before or "{}").get("hooks", {}).items():
        assert doc["hooks"][event][: len(groups)] == groups
    # The file's look is kept.
    style = settings_merge.detect_style(before)
    assert after.endswith("\n") == (before.endswith("\n") or not before)
    if style.indent:
        assert f"\n{style.indent}" in after and f'\n{style.indent}"hooks"' in after
    for ch in ("ü", "日本語", "✅", "élève", "🚀", "∑"):
        assert (ch in before) == (ch in after)  # raw, not \u-escaped


@pytest.mark.parametrize("fixture", FIXTURE_NAMES)
def test_install_twice_changes_nothing(project: Path, ccm_home: Path, fixture: str) -> None:
    path = put(project, fixture)
    installer.install_cmd("project", project, False)
    data, mtime, n_backups = path.read_bytes(), path.stat().st_mtime_ns, len(backups(ccm_home))
    proc = run_cli("install", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert "already installed" in proc.stdout
    assert path.read_bytes() == data
    assert path.stat().st_mtime_ns == mtime
    assert len(backups(ccm_home)) == n_backups


@pytest.mark.parametrize("fixture", FIXTURE_NAMES)
def test_uninstall_restores_exact_bytes(project: Path, ccm_home: Path, fixture: str) -> None:
    path = put(project, fixture)
    original = path.read_bytes()
    os.chmod(path, 0o600)
    assert installer.install_cmd("project", project, False) == 0
    assert path.read_bytes() != original
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # mode kept across the rewrite
    assert installer.uninstall_cmd("project", project, False) == 0
    assert path.read_bytes() == original
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list((ccm_home / "backups").rglob("original.*"))  # forgotten after uninstall


def test_uninstall_deletes_file_and_dir_it_created(project: Path) -> None:
    installer.install_cmd("project", project, False)
    assert installer.uninstall_cmd("project", project, False) == 0
    assert not (project / ".claude").exists()


def test_uninstall_keeps_claude_dir_with_other_files(project: Path) -> None:
    installer.install_cmd("project", project, False)
    (project / ".claude" / "commands").mkdir()
    installer.uninstall_cmd("project", project, False)
    assert not (project / ".claude" / "settings.json").exists()
    assert (project / ".claude" / "commands").is_dir()


def test_uninstall_keeps_hooks_and_settings_added_after_install(project: Path) -> None:
    path = put(project, "full_featured.json")
    installer.install_cmd("project", project, False)
    doc = json.loads(path.read_text())
    mine = {"type": "command", "command": "echo mine"}
    doc["hooks"]["Stop"].append({"hooks": [mine]})
    doc["hooks"]["PreToolUse"][0]["hooks"].append(mine)
    doc["model"] = "opus"
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    assert installer.uninstall_cmd("project", project, False) == 0
    after = json.loads(path.read_text())
    assert our_commands(after) == {}
    assert {"hooks": [mine]} in after["hooks"]["Stop"]
    assert after["hooks"]["PreToolUse"][0]["hooks"][-1] == mine
    assert after["model"] == "opus"
    expected = json.loads((SETTINGS_FIXTURES / "full_featured.json").read_text())
    expected["model"] = "opus"
    expected["hooks"]["Stop"].append({"hooks": [mine]})
    expected["hooks"]["PreToolUse"][0]["hooks"].append(mine)
    assert after == expected


def test_uninstall_when_nothing_installed(project: Path, ccm_home: Path) -> None:
    proc = run_cli("uninstall", cwd=project)
    assert proc.returncode == 0 and "no ccm hooks" in proc.stdout
    path = put(project, "full_featured.json")
    mtime = path.stat().st_mtime_ns
    proc = run_cli("uninstall", cwd=project)
    assert proc.returncode == 0 and "nothing to change" in proc.stdout
    assert path.stat().st_mtime_ns == mtime and not backups(ccm_home)


def test_stale_entries_replaced_in_place(project: Path) -> None:
    old_cmd = 'exec "$HOME/.ccm/bin/ccm-hook" PreToolUse #ccm-hooks'
    old = {"type": "command", "command": old_cmd, "timeout": 3}
    foreign = {"matcher": "Bash", "hooks": [{"type": "command", "command": "echo a"}]}
    doc = {
        "hooks": {
            "PreToolUse": [foreign, {"matcher": "Bash", "hooks": [old]}, {"hooks": [old]}, foreign],
            "PostCompact": [{"hooks": [{**old, "command": old_cmd.replace("PreToolUse", "PostCompact")}]}],
            "Stop": [{"hooks": [{"type": "command", "command": "echo b"}, old]}],
        }
    }
    new = settings_merge.install(doc)
    assert new["hooks"]["PreToolUse"] == [foreign, settings_merge.our_group("PreToolUse"), foreign]
    assert "PostCompact" not in new["hooks"]  # an event ccm no longer registers
    assert new["hooks"]["Stop"] == [
        settings_merge.our_group("Stop"),
        {"hooks": [{"type": "command", "command": "echo b"}]},
    ]
    assert list(new["hooks"])[:3] == ["PreToolUse", "Stop", "SessionStart"]
    assert settings_merge.install(new) == new


def test_empty_hook_containers_of_the_user_survive_uninstall(project: Path) -> None:
    # Untouched by ccm: stays even in the pure edit.
    doc = {"hooks": {"PostCompact": []}, "x": 1}
    cleaned, removed = settings_merge.uninstall(settings_merge.install(doc))
    assert removed == N_EVENTS and cleaned == doc
    # Filled by ccm ("Stop": [] becomes [ours]): only the pre-install original can tell, and it does.
    path = project / ".claude" / "settings.json"
    path.parent.mkdir()
    path.write_text('{"hooks": {"Stop": []}, "x": 1}')
    installer.install_cmd("project", project, False)
    installer.uninstall_cmd("project", project, False)
    assert path.read_text() == '{"hooks": {"Stop": []}, "x": 1}'


def test_empty_file_is_treated_as_empty_object(project: Path) -> None:
    path = put(project, "empty.json")
    assert installer.install_cmd("project", project, False) == 0
    assert set(json.loads(path.read_text())["hooks"]) == set(settings_merge.EVENTS)
    installer.uninstall_cmd("project", project, False)
    assert path.read_bytes() == b""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{}", settings_merge.Style(indent=None, final_newline=False, minified=True)),
        ('{\r\n    "a": 1\r\n}\r\n', settings_merge.Style(indent="    ", newline="\r\n")),
        ('{"a": 1}\n', settings_merge.Style(indent=None)),
        ("", settings_merge.DEFAULT_STYLE),
    ],
)
def test_detect_style(text: str, expected: settings_merge.Style) -> None:
    assert settings_merge.detect_style(text) == expected
    if text:
        assert settings_merge.dumps(json.loads(text), expected) == text


# --- refusals -------------------------------------------------------------------------------------

MALFORMED = {
    "invalid_json": ('{\n  "model": "opus"\n  "env": {}\n}\n', "is not valid JSON (line 3, column 3"),
    "top_level_list": ("[]\n", "is not a JSON object at the top level"),
    "hooks_not_object": ('{"hooks": []}', '"hooks" that is not an object'),
    "event_not_list": ('{"hooks": {"Stop": {"hooks": []}}}', '"hooks"."Stop" that is not a list'),
    "group_without_hooks": ('{"hooks": {"Stop": [{"command": "x"}]}}', 'without a "hooks" list'),
    "group_not_object": ('{"hooks": {"Stop": ["x"]}}', '"hooks"."Stop"[0] that is not an object'),
    "handler_not_object": ('{"hooks": {"Stop": [{"hooks": [1]}]}}', "that is not an object (found a number)"),
    # Valid JSON (for Python's json module at least) that could not be written back exactly.
    "lone_surrogate": ('{"env": {"X": "\\ud800"}}', "lone UTF-16 surrogate escape (\\ud800"),
    "deep_nesting": (
        '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "deeper than 100 levels (line 1, column",
    ),
    "nan": ('{"x": NaN}', "is not valid JSON (line 1, column 7: Expecting value"),
    "infinity": ('{"x": [1, -Infinity]}', "is not valid JSON (line 1, column 11: Expecting value"),
    "bom": ('\ufeff{"x": 1}', "is not valid JSON (it starts with a byte order mark (BOM))"),
    "duplicate_event": (
        '{"hooks": {"Stop": [], "X": [], "Stop": [{"hooks": [{"command": "~/bin/ccm-hook Stop #ccm-hooks"}]}]'
        "}}",
        'has the key "Stop" twice in an object it must edit',
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("command", ["install", "uninstall"])
def test_malformed_file_refused_untouched(project: Path, ccm_home: Path, case: str, command: str) -> None:
    text, problem = MALFORMED[case]
    path = project / ".claude" / "settings.json"
    path.parent.mkdir()
    path.write_text(text)
    mtime = path.stat().st_mtime_ns
    proc = run_cli(command, cwd=project)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"ccm-hooks: {path} ") and problem in lines[0]
    assert f"then run ccm-hooks {command} again" in lines[0]
    assert path.read_text() == text and path.stat().st_mtime_ns == mtime
    assert not (ccm_home / "bin" / "ccm-hook").exists()


def test_numbers_come_back_byte_for_byte(project: Path) -> None:
    """1e400 must not become Infinity, nor 1E2 100.0: every number is written back as it was written."""
    numbers = '"a": 1e400, "b": 1E2, "c": -0, "d": 1.50, "e": 0.1e1, "f": 1e-400, "g": 1234567890123456789012'
    text = (
        "{\n"
        f'  "x": {{{numbers}}},\n'
        '  "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "say hi", "timeout": 1E2}]}]},\n'
        '  "y": [-0.0, 2E+3, 5]\n'
        "}\n"
    )
    path = project / ".claude" / "settings.json"
    path.parent.mkdir()
    path.write_text(text)
    assert run_cli("install", cwd=project).returncode == 0
    after = path.read_text()
    assert f"{{{numbers}}}" in after and "[-0.0, 2E+3, 5]" in after and '"timeout": 1E2}' in after
    assert "Infinity" not in after and "100.0" not in after
    json.loads(after)  # still JSON
    assert run_cli("uninstall", cwd=project).returncode == 0
    assert path.read_text() == text


def test_install_changes_only_what_it_adds(project: Path) -> None:
    """A hand-formatted file: every line outside ccm's additions keeps its bytes (escapes, alignment)."""
    text = (
        "{\n"
        '    "model"  :  "opus",            \n'
        '    "env" : { "A": "\\u00e9\\/x", "B":"1" },\n'
        '    "hooks": {\n'
        '        "Stop": [ { "hooks": [ { "type": "command", "command": "mine" } ] } ]\n'
        "    }\n"
        "}"
    )
    path = project / ".claude" / "settings.json"
    path.parent.mkdir()
    path.write_text(text)
    assert installer.install_cmd("project", project, False) == 0
    after = path.read_text()
    removed = [ln[2:] for ln in difflib.ndiff(text.splitlines(), after.splitlines()) if ln.startswith("- ")]
    # The only line that changes is the one ending the "Stop" array: our group joins it.
    assert removed == ['        "Stop": [ { "hooks": [ { "type": "command", "command": "mine" } ] } ]']
    assert '"Stop": [ { "hooks": [ { "type": "command", "command": "mine" } ] }, {' in after
    assert after.splitlines()[:3] == text.splitlines()[:3] and not after.endswith("\n")
    assert json.loads(after)["env"] == {"A": "é/x", "B": "1"}
    assert installer.uninstall_cmd("project", project, False) == 0
    assert path.read_text() == text


def test_outdated_commands_are_upgraded_in_place(project: Path) -> None:
    """A file installed by an older ccm (command without the ownership tests): one line per event."""
    path = put(project, "full_featured.json")
    installer.install_cmd("project", project, False)
    current = path.read_text()
    old_style = current.replace('[ -O \\"$h\\" ] && [ -O \\"${h%/*}\\" ] && ', "")
    assert old_style.count("#ccm-hooks") == N_EVENTS and old_style != current
    path.write_text(old_style)
    assert all(len(c) == 1 for c in our_commands(json.loads(old_style)).values())  # still recognised
    assert installer.install_cmd("project", project, False) == 0
    diff = [
        ln for ln in difflib.ndiff(old_style.splitlines(), path.read_text().splitlines()) if ln[:2] in "- + "
    ]
    assert len(diff) == 2 * N_EVENTS and all('"command": ' in ln for ln in diff)
    assert path.read_text() == current
    path.write_text(old_style)
    assert installer.uninstall_cmd("project", project, False) == 0  # old ones are removed too
    assert not our_commands(json.loads(path.read_text() or "{}"))


@pytest.mark.parametrize("command", ["install", "uninstall", "install --dry-run"])
def test_fifo_settings_refused_without_blocking(project: Path, ccm_home: Path, command: str) -> None:
    path = project / ".claude" / "settings.json"
    path.parent.mkdir()
    os.mkfifo(path)
    proc = run_cli(*command.split(), cwd=project)  # a blocking open would hit run_cli's 60 s timeout
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "is a FIFO (named pipe), not a regular file" in proc.stderr and "move it aside" in proc.stderr
    assert stat.S_ISFIFO(os.lstat(path).st_mode)
    assert not (ccm_home / "bin" / "ccm-hook").exists()


def test_symlink_to_something_not_regular_is_refused(project: Path, tmp_path: Path) -> None:
    path = project / ".claude" / "settings.json"
    path.parent.mkdir()
    fifo = tmp_path / "a-fifo"
    os.mkfifo(fifo)
    for target, kind in ((fifo, "a FIFO (named pipe)"), (Path("/dev/null"), "a character device")):
        path.unlink(missing_ok=True)
        path.symlink_to(target)
        proc = run_cli("install", cwd=project)
        assert proc.returncode == 1 and f"(a link to {target}) is {kind}, not a regular file" in proc.stderr
        assert path.is_symlink()


@pytest.mark.parametrize("what", ["file", "directory"])
@pytest.mark.parametrize("command", ["install", "uninstall"])
def test_read_only_is_respected(project: Path, ccm_home: Path, what: str, command: str) -> None:
    """chmod a-w on the file, or on its directory, means hands off (for root too: the mode bits count)."""
    path = put(project, "full_featured.json")
    if command == "uninstall":
        installer.install_cmd("project", project, False)
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    locked = path if what == "file" else path.parent
    mode = stat.S_IMODE(locked.stat().st_mode)
    locked.chmod(mode & ~0o222)
    try:
        proc = run_cli(command, cwd=project)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        reason = "is read-only (mode 0444)" if what == "file" else f"is in a read-only directory ({locked}"
        assert reason in proc.stderr and f"chmod u+w {locked}" in proc.stderr
        assert f"ccm-hooks {command} --dry-run prints it" in proc.stderr
        assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
        dry = run_cli(command, "--dry-run", cwd=project)  # shows what to do by hand
        assert dry.returncode == 0 and "#ccm-hooks" in dry.stdout
    finally:
        locked.chmod(mode)
    assert run_cli(command, cwd=project).returncode == 0


def test_new_file_in_read_only_project_is_refused(project: Path) -> None:
    project.chmod(0o555)
    try:
        proc = run_cli("install", cwd=project)
    finally:
        project.chmod(0o755)
    assert proc.returncode == 1 and f"is in a read-only directory ({project}, mode 0555)" in proc.stderr
    assert not (project / ".claude").exists()


@pytest.mark.parametrize("command", ["install", "uninstall", "doctor"])
def test_ccm_home_pointing_at_a_file(project: Path, tmp_path: Path, command: str) -> None:
    not_a_dir = tmp_path / "ccm-home-file"
    not_a_dir.write_text("x")
    proc = subprocess.run(
        [CLI, command],
        cwd=project,
        env={**os.environ, "CCM_HOME": str(not_a_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == (
        f"ccm-hooks: $CCM_HOME ({not_a_dir}) is a regular file, not a directory; "
        "point CCM_HOME at a directory of yours (or unset it to use ~/.ccm)\n"
    )


def test_state_dir_of_another_user_or_open_to_others_is_refused(project: Path, ccm_home: Path) -> None:
    ccm_home.mkdir(mode=0o700)
    os.chown(ccm_home, 65534, 65534)  # the tests run as root: a foreign uid is a chown away
    proc = run_cli("install", cwd=project)
    assert proc.returncode == 1 and f"$CCM_HOME ({ccm_home}) belongs to uid 65534, not to you" in proc.stderr
    assert not (project / ".claude").exists() and not (ccm_home / "bin").exists()
    os.chown(ccm_home, os.getuid(), os.getgid())
    ccm_home.chmod(0o777)
    proc = run_cli("install", cwd=project)
    assert (
        proc.returncode == 1
        and f"is writable by others (mode 0777): run chmod go-w {ccm_home}" in proc.stderr
    )
    ccm_home.chmod(0o700)
    assert run_cli("install", cwd=project).returncode == 0


def test_everything_ccm_creates_is_private(project: Path, ccm_home: Path, tmp_path: Path) -> None:
    """Under the loosest umask: state-dir files 0600 (the shim 0700, it is run), directories 0700."""
    script = (
        "import os, subprocess, sys\n"
        "os.umask(0)\n"
        "for args in (['install'], ['install', '--scope', 'local'], ['uninstall'],"
        " ['watch', 'on', '--global'], ['watch', 'on', '--project', '.'], ['watch', 'off', '--global']):\n"
        f"    subprocess.run([{CLI!r}, *args], check=True, stdout=subprocess.DEVNULL)\n"
    )
    put(project, "full_featured.json")
    subprocess.run([sys.executable, "-c", script], cwd=project, check=True, timeout=120)
    seen = 0
    for dirpath, _, filenames in os.walk(ccm_home):
        assert stat.S_IMODE(os.stat(dirpath).st_mode) == 0o700, dirpath
        for name in filenames:
            mode = stat.S_IMODE(os.lstat(os.path.join(dirpath, name)).st_mode)
            assert mode == (0o700 if name == "ccm-hook" else 0o600), (dirpath, name, oct(mode))
            seen += 1
    assert seen >= 6  # shim, locks, backups, original, config.toml, its snapshot


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o000, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_new_settings_file_and_dir_modes(project: Path, umask: int, file_mode: int, dir_mode: int) -> None:
    """Like Claude's own: 0644 and 0755 at most, less what the umask takes (never world-writable)."""
    old = os.umask(umask)
    try:
        assert installer.install_cmd("project", project, False) == 0
    finally:
        os.umask(old)
    path = project / ".claude" / "settings.json"
    assert stat.S_IMODE(path.stat().st_mode) == file_mode
    assert stat.S_IMODE(path.parent.stat().st_mode) == dir_mode


def test_not_utf8_refused(project: Path) -> None:
    path = project / ".claude" / "settings.json"
    path.parent.mkdir()
    path.write_bytes(b'{"model": "\xff"}')
    with pytest.raises(CcmError, match="is not UTF-8 text"):
        installer.install_cmd("project", project, False)


def test_settings_path_is_a_directory(project: Path) -> None:
    (project / ".claude" / "settings.json").mkdir(parents=True)
    proc = run_cli("install", cwd=project)
    assert proc.returncode == 1 and "is a directory" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_project_dir_and_relative_ccm_home(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CcmError, match="does not exist"):
        installer.install_cmd("project", project / "nope", False)
    monkeypatch.setenv("CCM_HOME", "rel/dir")
    with pytest.raises(CcmError, match="relative path"):
        installer.install_cmd("project", project, False)


# --- scopes, symlinks, dry run, backups ----------------------------------------------------------


def test_all_three_scopes(project: Path, private_home: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for scope in ("project", "local"):
        proc = run_cli(
            "install", "--scope", scope, "--project", os.path.relpath(project, elsewhere), cwd=elsewhere
        )
        assert proc.returncode == 0, proc.stderr
    proc = run_cli("install", "--scope", "user", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    for path in (
        project / ".claude" / "settings.json",
        project / ".claude" / "settings.local.json",
        private_home / ".claude" / "settings.json",
    ):
        assert set(our_commands(json.loads(path.read_text()))) == set(settings_merge.EVENTS), path
    assert not (elsewhere / ".claude").exists()
    for scope in ("project", "local", "user"):
        assert installer.uninstall_cmd(scope, project, False) == 0
    assert not (project / ".claude").exists() and not (private_home / ".claude").exists()


def test_symlinked_settings_edited_at_target(project: Path, private_home: Path, tmp_path: Path) -> None:
    dotfiles = tmp_path / "dotfiles" / "claude"
    dotfiles.mkdir(parents=True)
    target = dotfiles / "settings.json"
    target.write_bytes((SETTINGS_FIXTURES / "four_space_no_newline.json").read_bytes())
    link = private_home / ".claude" / "settings.json"
    link.parent.mkdir()
    link.symlink_to(target)
    original = target.read_bytes()
    assert installer.install_cmd("user", project, False) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert set(our_commands(json.loads(target.read_text()))) == set(settings_merge.EVENTS)
    assert not list(dotfiles.glob(".*"))  # no temp file left behind
    assert installer.uninstall_cmd("user", project, False) == 0
    assert link.is_symlink() and target.read_bytes() == original


def test_dry_run_writes_nothing(project: Path, ccm_home: Path) -> None:
    path = put(project, "full_featured.json")
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    proc = run_cli("install", "--dry-run", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"--- {path}\n+++ {path}\n@@")
    assert proc.stdout.count("#ccm-hooks") == N_EVENTS
    assert "nothing written" in proc.stderr
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    assert not ccm_home.exists()  # not even the shim or the state dir
    # Nothing installed yet: a dry uninstall has nothing to show either.
    assert "nothing to change" in run_cli("uninstall", "--dry-run", cwd=project).stdout

    installer.install_cmd("project", project, False)
    installed, mtime = path.read_bytes(), path.stat().st_mtime_ns
    proc = run_cli("uninstall", "--dry-run", cwd=project)
    assert proc.returncode == 0 and proc.stdout.count("\n-") >= N_EVENTS
    assert path.read_bytes() == installed and path.stat().st_mtime_ns == mtime


def test_dry_run_of_new_file_diffs_from_dev_null(project: Path) -> None:
    proc = run_cli("install", "--dry-run", cwd=project)
    assert proc.stdout.startswith("--- /dev/null\n")
    assert not (project / ".claude").exists()


def test_dry_run_no_final_newline_marked(project: Path) -> None:
    path = project / ".claude" / "settings.json"
    path.parent.mkdir()
    path.write_text('{\n    "a": 1\n}')
    proc = run_cli("install", "--dry-run", cwd=project)
    assert proc.stdout.startswith(f"--- {path}\n+++ {path}\n@@ -1,3 +1,")
    assert proc.stdout.endswith("\n }\n\\ No newline at end of file\n")  # like diff(1)


def test_backup_taken_and_reported(project: Path, ccm_home: Path) -> None:
    path = put(project, "full_featured.json")
    original = path.read_bytes()
    proc = run_cli("install", cwd=project)
    assert proc.returncode == 0
    [backup] = backups(ccm_home)
    assert backup.read_bytes() == original and f"backup: {backup}" in proc.stdout
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert (backup.parent / "original.json").read_bytes() == original


def test_backups_pruned_to_newest_20(project: Path, ccm_home: Path) -> None:
    path = put(project, "empty_object.json")
    bdir = installer.backup_dir(paths.state_dir(), installer.real_target(path))
    bdir.mkdir(parents=True)
    for i in range(25):
        (bdir / f"20200101T0000{i:02d}.000000Z.json").write_text("old")
    installer.install_cmd("project", project, False)
    kept = sorted(p.name for p in bdir.glob("2*.json"))
    assert len(kept) == 20
    assert kept[0] == "20200101T000006.000000Z.json" and not kept[-1].startswith("2020")


# --- concurrency (real processes) ----------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import contextlib, io, json, os, sys
    from pathlib import Path
    from ccm_hooks import paths
    from ccm_hooks.commands import installer
    project, mode, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    for i in range(n):
        with contextlib.redirect_stdout(io.StringIO()):
            if mode == "install":
                installer.install_cmd("project", project, False)
            elif mode == "cycle":
                installer.install_cmd("project", project, False)
                installer.uninstall_cmd("project", project, False)
            elif mode == "foreign":
                # Another tool that honours ccm's lock: read-modify-write of the same file.
                target = installer.real_target(installer.settings_path("project", project))
                with installer.settings_lock(paths.state_dir(), target):
                    doc = json.loads(target.read_text())
                    doc.setdefault("env", {})[f"K{os.getpid()}_{i}"] = str(i)
                    tmp = target.with_name("foreign.tmp")
                    tmp.write_text(json.dumps(doc, indent=2))
                    os.replace(tmp, target)
    """
)


def spawn(project: Path, mode: str, n: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(project), mode, str(n)], stderr=subprocess.PIPE
    )


def wait_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()


def test_concurrent_installs_of_different_scopes(project: Path, private_home: Path) -> None:
    procs = [
        subprocess.Popen(
            [CLI, "install", "--scope", scope], cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for scope in ("project", "local", "user", "project", "local", "user")
    ]
    wait_all(procs)
    for path in (
        project / ".claude" / "settings.json",
        project / ".claude" / "settings.local.json",
        private_home / ".claude" / "settings.json",
    ):
        assert set(our_commands(json.loads(path.read_text()))) == set(settings_merge.EVENTS)


def test_install_uninstall_and_foreign_edits_race_without_loss(project: Path) -> None:
    path = put(project, "full_featured.json")
    procs = [spawn(project, "cycle", 8), spawn(project, "cycle", 8), spawn(project, "install", 8)]
    procs += [spawn(project, "foreign", 15), spawn(project, "foreign", 15)]
    wait_all(procs)
    foreign_pids = {p.pid for p in procs[3:]}
    installer.install_cmd("project", project, False)
    doc = json.loads(path.read_text())
    assert set(doc["env"]) >= {f"K{pid}_{i}" for pid in foreign_pids for i in range(15)}
    assert set(our_commands(doc)) == set(settings_merge.EVENTS)
    assert all(len(cmds) == 1 for cmds in our_commands(doc).values())
    expected = json.loads((SETTINGS_FIXTURES / "full_featured.json").read_text())
    cleaned = strip_ours(doc)
    cleaned["env"] = {k: v for k, v in cleaned["env"].items() if not k.startswith("K")}
    assert cleaned == expected


def test_install_racing_uninstall_ends_consistent(project: Path, ccm_home: Path) -> None:
    path = put(project, "four_space_no_newline.json")
    original = path.read_bytes()
    wait_all([spawn(project, "cycle", 10), spawn(project, "cycle", 10), spawn(project, "install", 10)])
    # Whatever interleaving happened, the file is whole and one uninstall gives back the exact original.
    doc = json.loads(path.read_text())
    assert our_commands(doc) in ({}, {e: [settings_merge.hook_command(e)] for e in settings_merge.EVENTS})
    installer.uninstall_cmd("project", project, False)
    assert path.read_bytes() == original
    assert not list(path.parent.glob("*.ccm-tmp"))
