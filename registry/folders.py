"""Folders that appear whole or not at all: a version's verified checkout, an export, a report, an
--out folder. Each is built beside its destination and renamed in, so a killed writer leaves only a
staging folder, which the next writer there (or gc, for checkouts) removes once its writer is gone.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from registry.errors import RegistryError
from registry.store import (
    BlobStore,
    Progress,
    check_file_name,
    list_entries,
    mtime_or_none,
    writer_is_gone,
    writer_prefix,
)


def materialise(store: BlobStore, files: list[tuple[str, str]], dest: Path, what: str,
                progress: Progress | None = None, *, keep: Callable[[Path], bool] | None = None) -> None:
    """Make `dest` a folder holding exactly the (path, digest) files, each verified on the way (see
    `build_folder` for `keep` and for what happens beside other processes)."""
    build_folder(dest, lambda staging: fill_from_store(store, files, staging, what, progress), keep=keep, what=what)


def fill_from_store(store: BlobStore, files: list[tuple[str, str]], folder: Path, what: str,
                    progress: Progress | None = None, extra: dict[str, bytes] | None = None) -> None:
    """Copy (path, digest) blobs into `folder`, verified, plus `extra` small files given as bytes."""
    for path, digest in files:
        store.copy_out(digest, folder / check_file_name(path, what), f"{what} file {path}", progress)
    for name, data in (extra or {}).items():
        (folder / check_file_name(name, what)).write_bytes(data)


def build_folder(dest: Path, fill: Callable[[Path], None], *, keep: Callable[[Path], bool] | None = None,
                 what: str = "") -> Path:
    """Build a folder with `fill(staging)` beside `dest`, then rename it into place: `dest` appears whole
    or not at all, and a killed run leaves only a staging folder that the next call here (or gc, for
    checkouts) removes.

    Several processes may build the same folder at once: when `dest` already exists, `keep(dest)` says
    whether it is good (another writer won the race: use it) or must be replaced (moved aside first, so
    a reader never sees a half-removed folder). Without `keep`, an existing `dest` is replaced."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_staging(dest.parent, dest.name)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{writer_prefix('stage')}", dir=dest.parent))
    try:
        fill(staging)
        for _ in range(5):
            try:
                os.rename(staging, dest)  # POSIX: atomic, and allowed over an empty folder
                return dest
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR, errno.ENOTDIR):
                    raise
            if keep is not None and keep(dest):
                return dest
            aside = dest.parent / f".{dest.name}.{writer_prefix('old')}{time.time_ns()}"
            try:
                os.rename(dest, aside)
            except FileNotFoundError:
                continue  # another process moved it first; try our rename again
            _remove(aside)
        raise RegistryError(f"{what or dest}: could not place {dest} (other processes keep replacing it)")
    finally:
        _remove(staging)


def check_output_folder(dest: str | os.PathLike, *, force: bool = False, option: str = "DEST") -> Path:
    """Refuse a user's output folder that could not be written: a file or a link, a folder holding
    anything (unless `force`), or a place where no folder can be made. Cheap enough to run before
    the work whose result goes there, and it writes nothing (its probe folder is removed)."""
    dest = Path(dest)
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise RegistryError(f"{option} {dest} exists and is not a folder; pick a new folder")
    if dest.is_dir() and any(e for e in dest.iterdir()) and not force:
        raise RegistryError(f"{option} {dest} exists and is not empty; pick a new folder, or pass --force to "
                            f"replace its content")
    nearest = dest.absolute().parent
    while not nearest.exists() and nearest != nearest.parent:  # build_folder makes the missing parents
        nearest = nearest.parent
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{dest.name}.{writer_prefix('probe')}", dir=nearest))
    except OSError as exc:
        raise RegistryError(f"{option} {dest}: cannot write a folder in {nearest} ({exc.strerror or exc})") from None
    return dest


def output_folder(dest: str | os.PathLike, fill: Callable[[Path], None], *, force: bool = False,
                  option: str = "DEST") -> Path:
    """Write a user's output folder (export, report, --out): refused when it holds anything unless
    `force` (then replaced as a whole); built beside it and renamed in (see `build_folder`)."""
    dest = check_output_folder(dest, force=force, option=option)
    return build_folder(dest, fill, what=str(dest))


def clean_staging(parent: Path, name: str | None = None, grace: float = 0.0) -> int:
    """Remove staging/aside folders beside `parent/name` (all names when None) left by dead writers."""
    removed = 0
    prefix = f".{name}." if name else "."
    now = time.time()
    for entry in list_entries(parent):
        if not entry.name.startswith(prefix):
            continue
        rest = entry.name[len(prefix):] if name else entry.name.partition(".")[2].partition(".")[2]
        if not (rest.startswith("stage-") or rest.startswith("old-")):
            continue
        mtime = mtime_or_none(entry)
        if mtime is not None and writer_is_gone(rest, now - mtime, grace):
            _remove(entry)
            removed += 1
    return removed


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
