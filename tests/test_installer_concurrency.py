"""install/uninstall against another program that rewrites the same settings file WITHOUT ccm's lock.

Claude Code does exactly that with settings.local.json ("always allow" answers): it reads the file, adds
its entry, writes a temp file and renames it over (seen in its code: ``.tmp.<pid>.<hex>``, fsync,
renameSync). Each writer here is a real process doing the same in a loop, each round adding one entry;
install/uninstall run many rounds in another real process. No entry the writer wrote may be lost.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ccm_hooks.commands import settings_merge

# The other program. mode "rename": temp file + fsync + rename, like Claude Code; "inplace": truncate and
# rewrite the same inode, like a naive editor. It stops when the stop file appears, then prints its count.
WRITER = textwrap.dedent(
    """
    import json, os, random, sys, time
    path, stop, mode, tag, pause = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
    n = 0
    while not os.path.exists(stop):
        try:
            with open(path, "rb") as fh:
                doc = json.loads(fh.read() or b"{}")
        except ValueError:
            continue  # caught the file half-written by the other side: read it again
        allow = doc.setdefault("permissions", {}).setdefault("allow", [])
        allow.append(f"Bash(echo {tag}-{n})")
        data = json.dumps(doc, indent=2).encode()
        if mode == "rename":
            tmp = f"{path}.tmp.{os.getpid()}.{n}"
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp, path)
        else:
            with open(path, "r+b") as fh:
                fh.truncate(0)
                fh.write(data)
        n += 1
        time.sleep(random.uniform(0.001, pause))
    print(n)
    """
)

# ccm's side: install then uninstall, ROUNDS times, in one process (the real functions, no CLI start-up
# cost per round, so the two sides overlap as much as possible).
CCM = textwrap.dedent(
    """
    import contextlib, io, sys
    from pathlib import Path
    from ccm_hooks.commands import installer
    project, rounds = Path(sys.argv[1]), int(sys.argv[2])
    for _ in range(rounds):
        with contextlib.redirect_stdout(io.StringIO()):
            installer.install_cmd("local", project, False)
            installer.uninstall_cmd("local", project, False)
    with contextlib.redirect_stdout(io.StringIO()):
        installer.install_cmd("local", project, False)
    """
)
ROUNDS = 60
# Longest pause between two rewrites, in seconds: hundreds of times a second, against a person's few a
# minute. ccm's read-to-swap window holds an fsync (4 to 13 ms on this disk), so a writer that rewrites
# faster than that, forever, starves it (ccm then gives up with one line, losing nothing).
PAUSE = {"rename": 0.010, "inplace": 0.030}


def entries(path: Path) -> list[str]:
    return [e for e in json.loads(path.read_text()).get("permissions", {}).get("allow", [])]


def entries_now(path: Path) -> list[str]:
    """entries() while the writer runs: the in-place writer truncates before it writes, so a read can
    catch the file empty or half-written. Such a read counts as no entries yet; the poll reads again."""
    try:
        return entries(path)
    except ValueError:
        return []


@pytest.mark.parametrize("mode", ["rename", "inplace"])
def test_concurrent_writer_loses_nothing(tmp_path: Path, mode: str) -> None:
    project = tmp_path / "proj"
    path = project / ".claude" / "settings.local.json"
    path.parent.mkdir(parents=True)
    path.write_text('{\n  "permissions": {\n    "allow": []\n  }\n}\n')
    stop = tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(stop), mode, "w", str(PAUSE[mode])],
        stdout=subprocess.PIPE,
        text=True,
    )
    # The writer is a fresh python: let it get going before ccm starts, so the two really overlap.
    deadline = time.monotonic() + 30
    while len(entries_now(path)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    ccm = subprocess.run(
        [sys.executable, "-c", CCM, str(project), str(ROUNDS)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    stop.touch()
    count = int(writer.communicate(timeout=60)[0])
    elapsed = time.monotonic() - started
    assert ccm.returncode == 0, ccm.stderr
    written = {f"Bash(echo w-{i})" for i in range(count)}
    final = entries(path)
    lost = sorted(written - set(final), key=lambda e: int(e.rsplit("-", 1)[1].rstrip(")")))
    # Each of ccm's rounds reads, merges and swaps; a few dozen rewrites meanwhile is overlap enough (the
    # in-place writer pauses up to 30 ms, and a quick machine runs the 60 rounds in under a second).
    assert count >= 20, f"the writer wrote only {count} times in {elapsed:.1f}s: no real overlap"
    assert not lost, f"{len(lost)} of {count} entries lost: {lost[:10]}"
    assert len(final) == len(set(final))
    # And ccm's own last install is whole, unless the writer (which does not lock) overwrote it afterwards
    # with a version it had read before: the writer's loss to make, not ccm's.
    doc = json.loads(path.read_text())
    assert set(settings_merge.count_ours(doc)) in (set(), set(settings_merge.EVENTS))
