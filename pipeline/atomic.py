"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Models, registry entries and packages are written to a temporary sibling and renamed into place;
``os.replace`` is atomic on one filesystem, so a crash leaves no partial artifact visible.
"""

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fsync(tmp_path)
        os.replace(tmp_path, target)
        _fsync(target.parent)  # the rename itself survives a power cut (the collector acks after it)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: Path, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def create_once(target: Path, data: bytes) -> None:
    """Publish ``data`` at ``target`` (mode 600) unless a file is already there, for secrets made on
    first use. Written aside, flushed, then hard-linked into place: the link fails if another
    process got there first, so processes racing on a fresh machine all read one secret. (A rename,
    as in ``write_bytes``, would let the last writer replace a secret others already used.)"""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)  # mode 600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, target)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success it becomes ``target``.

    An existing ``target`` is swapped out and removed only after the new one is in place.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        for path in (*tmp.rglob("*"), tmp):
            _fsync(path)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fsync(path: Path) -> None:
    """Flush a file or a directory's entries to disk (for writers that publish in their own way)."""
    _fsync(path)


def _fsync(path: Path) -> None:
    """Flush a file or a directory's entries to disk, so the rename publishes complete data."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
