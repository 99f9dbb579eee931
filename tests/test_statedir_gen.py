"""bench/statedir_gen.py writes what the handler writes: its fast statuses equal a full fold, and the
state dirs it makes pass ``ccm-hooks validate``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.statedir_gen import session_ids, write_session, write_statedir
from ccm_hooks import fileio, state

CLI = str(Path(sys.executable).parent / "ccm-hooks")


@pytest.mark.parametrize("shape", [{}, {"ended": True}, {"busy": True}])
def test_the_fast_status_is_the_full_fold(shape: dict[str, bool], tmp_path: Path) -> None:
    [sid] = session_ids(1, seed=4)
    for root, exact_limit in ((tmp_path / "exact", 10**6), (tmp_path / "fast", 0)):
        write_session(str(root), sid, 2000, exact_limit=exact_limit, seed=7, start=1.8e9, **shape)
    exact = (tmp_path / "exact" / "status" / f"{sid}.json").read_bytes()
    assert (tmp_path / "fast" / "status" / f"{sid}.json").read_bytes() == exact
    log = (tmp_path / "fast" / "events" / f"{sid}.jsonl").read_bytes()
    assert log == (tmp_path / "exact" / "events" / f"{sid}.jsonl").read_bytes()
    replay = None
    for _, rec in fileio.iter_lines(log):
        replay = state.apply(replay, rec)
    assert fileio.encode_line(replay) == exact


def test_a_generated_state_dir_validates(tmp_path: Path) -> None:
    root = tmp_path / "ccm"
    ids = write_statedir(str(root), 20, 60, busy=3, seed=2)
    assert len(set(ids)) == 20
    out = subprocess.run(
        [CLI, "validate"],
        capture_output=True,
        text=True,
        env={"CCM_HOME": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "20 sessions" in out.stdout and "0 errors" in out.stdout
