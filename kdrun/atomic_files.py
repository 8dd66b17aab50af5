"""Files written whole or not at all (a staging name beside the target, renamed into place), and their digests.

Readers see the previous file or the complete new one, never a partial one (`os.replace` is
atomic within one filesystem). A write that fails removes its staging file or folder, so a
killed job or a full disk leaves no orphans next to checkpoints and store entries. A write that
fails because the filesystem is full raises `DiskFull` naming the directory, instead of the
writer's own message (torch's is "[enforce fail at inline_container.cc] ... unexpected pos").
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from kdrun.errors import DiskFull

STAGING_PREFIX = ".tmp-"
# torch's and numpy's writers do not always report ENOSPC: a failed write with less than this
# much space left on the filesystem is taken to be a full disk.
LOW_SPACE_BYTES = 1 << 20
DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def staging_path(target: Path) -> Path:
    """A unique hidden name in the target's directory (so the final rename stays on one filesystem)."""
    return target.with_name(f"{STAGING_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}")


def is_disk_full(error: BaseException, directory: Path) -> bool:
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        return True
    if not isinstance(error, (OSError, RuntimeError)):
        return False
    try:
        return shutil.disk_usage(directory).free < LOW_SPACE_BYTES
    except OSError:
        return False


@contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a staging path to write; on success it replaces `target`, on failure it is removed."""
    target = Path(target)
    with _renamed_into_place(staging_path(target), target) as staging:
        yield staging


@contextmanager
def staged_directory(target: Path | str) -> Iterator[Path]:
    """Yield a fresh staging folder; on success it is renamed to `target` (which must not exist)."""
    target = Path(target)
    staging = staging_path(target)
    staging.mkdir(parents=True)
    with _renamed_into_place(staging, target):
        yield staging


@contextmanager
def _renamed_into_place(staging: Path, target: Path) -> Iterator[Path]:
    try:
        yield staging
        os.replace(staging, target)
    except BaseException as error:
        full = is_disk_full(error, target.parent)
        _remove(staging)
        if full and not isinstance(error, DiskFull):
            raise DiskFull(target.parent) from error
        raise


def write_text(target: Path | str, text: str) -> None:
    with atomic_path(target) as staging:
        staging.write_text(text)


def write_json(target: Path | str, payload, **dump_options) -> None:
    write_text(target, json.dumps(payload, **{"indent": 2, "default": str, **dump_options}))


def torch_save(payload, target: Path | str) -> None:
    import torch

    with atomic_path(target) as staging:
        torch.save(payload, staging)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
