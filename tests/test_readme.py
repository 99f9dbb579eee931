"""The README's commands stay true: CI runs the test command it gives, and what it names exists."""

from __future__ import annotations

import re

from tests.conftest import REPO


def _shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.DOTALL)


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    blocks = _shell_blocks(readme)
    quick_start, test_block = blocks[0], blocks[1]
    test_command = test_block.strip()
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test_command in ci, f"README test command {test_command!r} is not what .ci/run runs"
    assert "sh install/dev-setup.sh" in ci
    assert "./install/install.sh" in quick_start and "ccm-hooks install" in quick_start


def test_scripts_the_readme_names_exist_and_are_executable() -> None:
    for script in ("install/install.sh", "install/dev-setup.sh", ".ci/run", "bench/hook_latency.py"):
        path = REPO / script
        assert path.exists() and path.stat().st_mode & 0o111, script


def test_spec_links_resolve() -> None:
    readme = (REPO / "README.md").read_text()
    for target in re.findall(r"\]\(((?:spec|docs)/[^)#]+)\)", readme):
        assert (REPO / target).exists(), target
