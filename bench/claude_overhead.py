#!/usr/bin/env python3
"""What ccm's hooks cost a real `claude -p` run, synchronous versus `async: true`, and what async loses.

The real claude CLI (tests/node_modules/.bin/claude or $CCM_TEST_CLAUDE) runs against the scripted
Messages API in tests/fakeapi.py: one prompt, then TOOLS turns that each run one Bash `true`, then a final
text. The model answers instantly, so the difference between variants is hook time on Claude's critical path
and nothing else. Variants, interleaved run by run:

  none   no hooks registered (baseline)
  sync   `ccm-hooks install` as shipped
  async  the same entries with "async": true

For each it prints the median wall time of a run, the added time per tool call against `none`, and how many
of the expected events reached the log (async hooks still running when `-p` exits are killed).

    python bench/claude_overhead.py [--tools 20] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fakeapi import FakeAnthropic, Script, text, tool_use  # noqa: E402

CLI = str(Path(sys.executable).parent / "ccm-hooks")


def _claude() -> str:
    for candidate in (os.environ.get("CCM_TEST_CLAUDE"), str(REPO / "tests/node_modules/.bin/claude")):
        if candidate and Path(candidate).exists():
            return candidate
    raise SystemExit("claude not found: run `sh install/dev-setup.sh` or set CCM_TEST_CLAUDE")


def _project(root: Path, variant: str, env: dict[str, str]) -> Path:
    project = root / f"project-{variant}"
    project.mkdir()
    if variant != "none":
        subprocess.run([CLI, "install", "--project", str(project)], env=env, check=True, capture_output=True)
    if variant == "async":
        settings_file = project / ".claude" / "settings.json"
        settings = json.loads(settings_file.read_text())
        for groups in settings["hooks"].values():
            for group in groups:
                for handler in group["hooks"]:
                    handler["async"] = True
        settings_file.write_text(json.dumps(settings, indent=2))
    return project


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tools", type=int, default=20, help="sequential tool calls per run")
    parser.add_argument("--runs", type=int, default=5, help="runs per variant")
    args = parser.parse_args()

    claude = _claude()
    root = Path(tempfile.mkdtemp(prefix="ccm-bench-claude-"))
    home = root / "home"
    home.mkdir()
    variants = ("none", "sync", "async")
    samples: dict[str, list[float]] = {v: [] for v in variants}
    recorded: dict[str, list[int]] = {v: [] for v in variants}
    expected = 4 + 2 * args.tools  # SessionStart, UserPromptSubmit, Pre+Post per tool, Stop, SessionEnd

    with FakeAnthropic() as api:
        for run in range(args.runs + 1):  # run 0 warms caches and is not counted
            for variant in variants:
                ccm_home = root / f"ccm-{variant}-{run}"
                env = {
                    "HOME": str(home), "CCM_HOME": str(ccm_home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
                    "ANTHROPIC_BASE_URL": api.base_url, "ANTHROPIC_API_KEY": "sk-test-bench-0000000000",
                    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1",
                    "IS_SANDBOX": "1",
                }  # fmt: skip
                (root / f"r{run}").mkdir(exist_ok=True)
                project = _project(root / f"r{run}", variant, env)
                replies = [
                    [tool_use("Bash", {"command": "true", "description": f"t{i}"})] for i in range(args.tools)
                ]
                api.responder = Script([*replies, [text("done")]])
                start = time.perf_counter()
                proc = subprocess.run(
                    [claude, "-p", "go", "--dangerously-skip-permissions"],
                    cwd=project, env=env, capture_output=True, text=True,
                    stdin=subprocess.DEVNULL, timeout=300,
                )  # fmt: skip
                elapsed = time.perf_counter() - start
                if proc.returncode != 0:
                    raise SystemExit(f"claude failed ({variant}): {proc.stdout}{proc.stderr}")
                if run == 0:
                    continue
                samples[variant].append(elapsed)
                time.sleep(0.5)  # let async stragglers that survived finish before counting
                logs = list((ccm_home / "events").glob("*.jsonl")) if variant != "none" else []
                recorded[variant].append(sum(len(p.read_text().splitlines()) for p in logs))

    base = statistics.median(samples["none"])
    print(f"claude -p, {args.tools} sequential Bash calls, {args.runs} runs per variant (medians)")
    print(f"{'variant':<8} {'run s':>7} {'+ms/tool call':>14} {'events logged':>14}")
    for variant in variants:
        median = statistics.median(samples[variant])
        per_tool = (median - base) / args.tools * 1000
        logged = "-" if variant == "none" else f"{min(recorded[variant])}-{max(recorded[variant])}/{expected}"
        print(f"{variant:<8} {median:7.2f} {per_tool:14.1f} {logged:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
