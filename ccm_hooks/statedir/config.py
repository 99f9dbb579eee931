"""``$CCM_HOME/config.toml``: the file people edit, read by the CLI and ccm-agentd (spec/layout.md).

Handlers never parse it: they read the compiled snapshot (``ccm_hooks.watch``).
"""

from __future__ import annotations

import tomllib
from typing import Any

from ccm_hooks import fileio, watch
from ccm_hooks.errors import CcmError


def read_config(root: str) -> dict[str, Any]:
    path = watch.config_path(root)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise CcmError(f"{path} is not valid TOML ({exc}); fix or remove it, then run this again") from None


def write_config(root: str, data: dict[str, Any]) -> None:
    """Replace config.toml (a copy of the old one kept as config.toml.bak) and refresh the snapshot."""
    import tomli_w

    path = watch.config_path(root)
    text = tomli_w.dumps(data).encode()
    try:
        with open(path, "rb") as fh:
            old = fh.read()
    except FileNotFoundError:
        old = None
    if old is not None and old != text:
        # tomli-w cannot keep comments: the previous file stays next to it, byte for byte.
        fileio.atomic_write(path + ".bak", old)
    fileio.atomic_write(path, text)
    watch.compile_config(root)
