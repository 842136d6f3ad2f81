"""Checkpoint files: written whole or not at all, and read with a one-line error naming the file.

A checkpoint is written to a temporary file beside its destination, flushed to disk, then renamed
over it: on one file system a rename is atomic, so a crash or a kill at any moment leaves either the
previous checkpoint or the new one, never a part of one. (Lightning writes to the system's temporary
directory and moves the file; when that directory is on another file system than the run, the move is
a copy, and a kill during it leaves a destroyed `last.ckpt`.) What an interrupted save leaves behind,
`<name>.partial<pid>`, is removed when a run starts in that directory.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import zipfile
from pathlib import Path

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from dftlab.errors import CheckpointError

log = logging.getLogger(__name__)

PARTIAL = ".partial"  # a save in progress: <name>.partial<pid>, beside <name>
META = "meta.pt"  # a distributed (sharded) checkpoint folder's non-tensor state, as Lightning names it


def partial_path(path: Path) -> Path:
    return path.with_name(f"{path.name}{PARTIAL}{os.getpid()}")


def write_failure(path: Path, err: OSError) -> str:
    """One line: which file, why, and that the checkpoints written before are whole."""
    why = err.strerror or str(err)
    if err.errno == errno.ENOSPC:
        free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
        why = f"no space left on its disk ({free / 2**20:.0f} MiB free)"
    return (f"{path}: checkpoint not written: {why}. The checkpoints saved before it are whole; make room, then "
            f"resume with ckpt_path=last run_id={path.parent.parent.name}")


def atomic_save(checkpoint: dict, path: str | Path) -> None:
    """`torch.save` to a temporary file beside `path`, fsync, rename over `path`; nothing is left on failure."""
    path = Path(path)
    tmp = partial_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:  # an exception or an interruption: no half-written file stays
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise CheckpointError(write_failure(path, err)) from None
        raise
    _fsync_dir(path.parent)  # the rename itself is on disk


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems (network ones) refuse to sync a folder: the rename is still atomic
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer for files on the local file systems, saving with `atomic_save`."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's own way
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_save(checkpoint, path)


def remove_partial_saves(folder: str | Path) -> list[Path]:
    """Delete what interrupted saves left in `folder` (call it holding the run's lock: no save is running)."""
    folder = Path(folder)
    leftovers = sorted(folder.glob(f"*{PARTIAL}*")) if folder.is_dir() else []
    for p in leftovers:
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    if leftovers:
        log.warning("removed %d partial checkpoint(s) left by an interrupted save: %s", len(leftovers),
                    ", ".join(p.name for p in leftovers))
    return leftovers


def problem(path: Path) -> str | None:
    """What is wrong with `path` as a checkpoint (None: it is a whole one), read cheaply: the zip
    directory that `torch.save` writes at the end of the file is there, so the file was not cut short."""
    if not path.exists():
        return "no such file"
    if path.is_dir():  # a distributed checkpoint: a folder of shards and its metadata
        return None if (path / META).is_file() and (path / ".metadata").is_file() else \
            f"a folder that is not a distributed checkpoint (no {META} and .metadata in it)"
    size = path.stat().st_size
    if size == 0:
        return "empty (0 bytes): the save that wrote it was interrupted"
    with open(path, "rb") as f:
        head = f.read(64)
    if not head.startswith(b"PK\x03\x04"):
        kind = "a JSON or JSONL file" if head.lstrip()[:1] in (b"{", b"[") else "not a file torch.save writes"
        return f"not a checkpoint ({kind}; it starts with {head[:24]!r})"
    try:
        zipfile.ZipFile(path).close()
    except (zipfile.BadZipFile, OSError) as err:
        return f"truncated or damaged ({size} bytes; {err})"
    return None


def intact_beside(path: Path) -> list[Path]:
    """The whole checkpoints in the same folder as `path`, newest first."""
    others = [p for p in path.parent.glob("*.ckpt") if p != path and PARTIAL not in p.name]
    return sorted((p for p in others if problem(p) is None), key=lambda p: p.stat().st_mtime, reverse=True)


def check(path: str | Path, key: str) -> Path:
    """`path` if it is a whole checkpoint; else a one-line CheckpointError naming it (and `key`, the
    setting it came from) and an intact checkpoint beside it, if there is one."""
    path = Path(path).expanduser()
    what = problem(path)
    if what is None:
        return path
    hint = ""
    if path.parent.is_dir() and (intact := intact_beside(path)):
        hint = f"; the checkpoint {intact[0].name} beside it is whole: {key}={intact[0]}"
    raise CheckpointError(f"{key}={path}: {what}{hint}")


def read(path: str | Path, key: str) -> dict:
    """A checkpoint's contents as plain containers (`weights_only`; tensors mapped from the file, not
    read), or a one-line CheckpointError."""
    path = check(path, key)
    try:
        state = torch.load(path / META if path.is_dir() else path, map_location="cpu", weights_only=True,
                           mmap=not path.is_dir())
    except Exception as err:  # noqa: BLE001  (whatever torch finds wrong, said in one line)
        raise CheckpointError(f"{key}={path}: cannot be read: {str(err).splitlines()[0]}") from None
    if not isinstance(state, dict) or "global_step" not in state:
        raise CheckpointError(f"{key}={path}: not a Lightning checkpoint (no global_step in it)")
    return state
