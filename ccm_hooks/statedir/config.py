"""``$CCM_HOME/config.toml``: the file people edit, read by the CLI and ccm-agentd (spec/layout.md).

Handlers never parse it: they read the compiled snapshot (``ccm_hooks.watch``). Reading uses tomllib;
changing it (``ccm-hooks watch on|off`` for defaults) uses tomlkit, which edits the parsed document in
place and writes back everything else as it was: comments, blank lines, alignment, key order, quoting.
"""

from __future__ import annotations

import copy
import time
import tomllib
from typing import Any

from ccm_hooks import paths, watch
from ccm_hooks.errors import CcmError
from ccm_hooks.statedir import editfile

CONTENDED_S = 10.0  # an editor saving config.toml in a loop: give up after this long


def _read(path: str) -> editfile.Snapshot:
    try:
        return editfile.read(path)
    except editfile.NotRegular as exc:
        raise CcmError(
            f"{path} is {exc.kind}, not a regular file: move it aside, then run this again"
        ) from None
    except editfile.TooLarge as exc:
        raise CcmError(f"{exc}: move it aside, then run this again") from None
    except OSError as exc:
        raise CcmError(
            f"cannot read {path}: {exc.strerror}; fix its permissions, then run this again"
        ) from None


def _parse(path: str, raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CcmError(f"{path} is not valid TOML ({exc}); fix or remove it, then run this again") from None


def read_config(root: str) -> dict[str, Any]:
    """The parsed config.toml ({} if there is none). Never blocks on a FIFO put in its place."""
    path = watch.config_path(root)
    return _parse(path, _read(path).raw)


def update_table(root: str, keys: tuple[str, ...], values: dict[str, Any]) -> None:
    """Set ``values`` in the table at ``keys`` (``("watch",)``, ``("projects", dir, "watch")``), creating
    it if needed, then refresh the snapshot. Everything else in the file keeps its bytes.

    Callers serialise ccm's own writers with the config lock; an editor saving the file meanwhile is
    caught by a compare-and-swap (``editfile``) and the edit is redone on its version. What tomlkit
    writes is read back with tomllib and must equal the old settings with just this change, and every
    comment line must still be there; otherwise nothing is written.
    """
    import tomlkit

    path = watch.config_path(root)
    give_up = time.monotonic() + CONTENDED_S
    while True:
        snap = _read(path)
        before = _parse(path, snap.raw)
        text = snap.raw.decode("utf-8") if snap.raw is not None else ""
        doc = tomlkit.parse(text)
        _set(doc, keys, values, path)
        new_text = tomlkit.dumps(doc)
        expected = copy.deepcopy(before)
        _set(expected, keys, values, path)
        comments = [line.strip() for line in text.splitlines() if line.strip().startswith("#")]
        kept = {line.strip() for line in new_text.splitlines()}
        if tomllib.loads(new_text) != expected or not all(c in kept for c in comments):
            raise CcmError(
                f"could not update {path} without changing something else; set it by hand: {values}"
            )
        found = editfile.read_only_reason(snap)
        if found is not None:
            raise CcmError(f"{path} {found[0]}: run chmod u+w {found[1]} and try again, or edit it by hand")
        try:
            editfile.replace(snap, new_text.encode("utf-8"), paths.FILE_MODE)
            break
        except editfile.Changed:
            if time.monotonic() > give_up:
                raise CcmError(
                    f"{path} kept changing for {CONTENDED_S:.0f}s; try again when it is idle"
                ) from None
        except editfile.Displaced as exc:
            raise CcmError(
                f"another program wrote {path} at the very moment ccm replaced it; its version was: "
                f"{exc.data[:200]!r}...; check the file and try again"
            ) from None
        except OSError as exc:
            raise CcmError(f"cannot write {path}: {exc.strerror}") from None
    watch.compile_config(root)


def _set(doc: Any, keys: tuple[str, ...], values: dict[str, Any], path: str) -> None:
    """Set ``values`` under ``keys`` in a tomlkit document, or in a plain dict (the expected result)."""
    import tomlkit

    styled = isinstance(doc, tomlkit.TOMLDocument)
    table = doc
    for depth, key in enumerate(keys):
        if key not in table:
            # An intermediate table is only a name prefix: [projects."/dir".watch] needs no [projects].
            table[key] = tomlkit.table(is_super_table=depth < len(keys) - 1) if styled else {}
        table = table[key]
        if not hasattr(table, "keys"):
            raise CcmError(f"{path}: {'.'.join(keys[: depth + 1])} is not a table; fix it by hand")
    for key, value in values.items():
        if styled and key not in table and isinstance(table, tomlkit.items.Table) and table:
            _add_after_last_key(table, key, value)
        else:
            table[key] = value


def _add_after_last_key(table: Any, key: str, value: Any) -> None:
    """A new key goes right after the table's last key, not after the comments and blank lines that
    end the table (those introduce whatever follows, and stay with it)."""
    last = list(table.keys())[-1]
    insert_after = getattr(table.value, "_insert_after", None)  # tomlkit has no public insert
    if insert_after is None:
        table[key] = value
    else:
        insert_after(last, key, value)
