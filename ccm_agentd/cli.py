"""``ccm-agentd``: the daemon that acts on what the hooks record. Not built yet (issue 4); until then the
command exists so install scripts and service files can name it, and says so plainly."""

from __future__ import annotations

import sys


def main() -> None:
    print(
        "ccm-agentd: the daemon is not built yet; the hooks already record everything "
        "(see `ccm-hooks status --watch`)",
        file=sys.stderr,
    )
    sys.exit(1)
