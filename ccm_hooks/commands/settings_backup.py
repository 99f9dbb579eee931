"""What ccm keeps of a settings file it changes: a copy before each change, and the original before the
first install (so uninstall can give back the exact bytes). Layout and rules: spec/settings.md.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ccm_hooks import paths

KEEP_BACKUPS = 20
ORIGINAL = "original.json"
ORIGINAL_ABSENT = "original.absent"
_BACKUP_RE = re.compile(r"\d{8}T\d{6}\.\d{6}Z(-\d+)?\.json")


def slug(target: Path) -> str:
    """A readable, collision-free file name for a settings file (letters, digits, dashes only).

    The hash keeps ``/a/b-c`` and ``/a/b/c`` apart; the readable part is clipped so the name stays short.
    """
    text = os.fspath(target)
    readable = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[-80:].lstrip("-")
    return f"{readable}-{hashlib.sha256(text.encode('utf-8', 'surrogateescape')).hexdigest()[:10]}"


def backup_dir(state_root: str, target: Path) -> Path:
    return Path(paths.backups_dir(state_root)) / slug(target)


def _write_private(path: Path, data: bytes) -> None:
    paths.ensure_dir(os.fspath(path.parent))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # mkstemp already made it 0600: settings may hold tokens in "env"
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def take(state_root: str, target: Path, raw: bytes) -> Path:
    """Copy ``raw`` to a new timestamped file, keep the newest ``KEEP_BACKUPS``; return its path."""
    bdir = backup_dir(state_root, target)
    paths.ensure_dir(os.fspath(bdir))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    dest = bdir / f"{stamp}.json"
    n = 0
    while dest.exists():  # two changes in one microsecond: keep both
        n += 1
        dest = bdir / f"{stamp}-{n}.json"
    _write_private(dest, raw)
    # Names sort in time order (fixed-width UTC stamps), so the oldest are first.
    backups = sorted(p for p in bdir.iterdir() if _BACKUP_RE.fullmatch(p.name))
    for old in backups[:-KEEP_BACKUPS]:
        old.unlink(missing_ok=True)
    return dest


@dataclass
class Original:
    raw: bytes | None  # None: the settings file did not exist before the first install
    created_dir: str | None  # a directory the first install created (only when raw is None)


def save_original(state_root: str, target: Path, raw: bytes | None, created_dir: str | None) -> None:
    """Remember the content before the FIRST install; later installs keep the first record."""
    bdir = backup_dir(state_root, target)
    if (bdir / ORIGINAL).exists() or (bdir / ORIGINAL_ABSENT).exists():
        return
    if raw is not None:
        _write_private(bdir / ORIGINAL, raw)
        return
    if created_dir is None and _created_by_ccm(state_root, target.parent):
        # .claude/ made by the install of the sibling scope: whichever uninstall empties it removes it.
        created_dir = os.fspath(target.parent)
    _write_private(bdir / ORIGINAL_ABSENT, json.dumps({"created_dir": created_dir}).encode() + b"\n")


def _created_by_ccm(state_root: str, directory: Path) -> bool:
    for marker in Path(paths.backups_dir(state_root)).glob(f"*/{ORIGINAL_ABSENT}"):
        try:
            if json.loads(marker.read_text("utf-8")).get("created_dir") == os.fspath(directory):
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def load_original(state_root: str, target: Path) -> Original | None:
    bdir = backup_dir(state_root, target)
    try:
        return Original((bdir / ORIGINAL).read_bytes(), None)
    except OSError:  # none recorded (or no usable state dir: dry runs do not check it)
        pass
    try:
        info = json.loads((bdir / ORIGINAL_ABSENT).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    created = info.get("created_dir") if isinstance(info, dict) else None
    return Original(None, created if isinstance(created, str) else None)


def forget_original(state_root: str, target: Path) -> None:
    bdir = backup_dir(state_root, target)
    for name in (ORIGINAL, ORIGINAL_ABSENT):
        (bdir / name).unlink(missing_ok=True)
