"""Content-addressed blob store: every file stored once, under its sha256, verified on every read.

Layout: `objects/sha256/ab/cdef…` (the first two hex digits fan out the directory). A write goes to
`objects/tmp/` first, is fsynced, then renamed into place (and the directory fsynced), so a blob's
path exists only once its bytes are durable; a crash leaves at most a temp file, which gc removes.
Local folders use the OS directly; any other URL (s3://, gs://, memory://…) goes through fsspec.

Database rows are input, not trusted code (a team shares the database): every path this module builds
from a digest checks that it is 64 hex digits first, and files are read without following symlinks.
Temp files and staging folders carry their writer's host and pid in their names, so housekeeping can
tell a crashed writer's debris (removable at once) from a live writer's work (never touched while
that process lives on this host).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from registry.adapter_format import FILE_NAME
from registry.errors import IntegrityError, RegistryError

CHUNK = 1 << 20  # hash and copy in 1 MiB chunks: bounded memory for any file size
Progress = Callable[[int], None]  # called with the number of bytes just processed
HEX64 = re.compile(r"[0-9a-f]{64}")
# A live writer's temp file is never removed on its own host; on another host (a shared store) only
# when older than this, whatever gc's --grace says, because a write in progress there cannot be seen.
FOREIGN_TEMP_MIN_AGE = 600.0
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40] or "host"
_WRITER_RE = re.compile(r"\.?[a-z]+-(?P<host>[A-Za-z0-9]*)-(?P<pid>[0-9]+)-")


def check_hex(digest: object) -> str:
    """`digest` if it is a sha256 hex digest; IntegrityError otherwise (a crafted row could say '../x')."""
    if not isinstance(digest, str) or not HEX64.fullmatch(digest):
        raise IntegrityError(f"invalid blob digest {str(digest)[:80]!r} in the registry database (expected 64 "
                             f"lowercase hex digits); refusing to build a path from it")
    return digest


@dataclass
class Staged:
    """A file copied into the store's temp area, hashed, not yet at its address."""

    tmp: str
    digest: str
    size: int


def writer_prefix(kind: str) -> str:
    """Name prefix of a temp file or staging folder: who is writing it (see `writer_is_gone`)."""
    return f"{kind}-{_HOST}-{os.getpid()}-"


def writer_is_gone(name: str, age: float, grace: float) -> bool:
    """Whether the temp file or staging folder `name` (a basename) may be removed.

    This host's: as soon as its writer process has exited. A live writer's (or another host's, or an
    unparseable name): only after max(grace, FOREIGN_TEMP_MIN_AGE), so a reused pid delays, never loses."""
    m = _WRITER_RE.match(name)
    if m and m["host"] == _HOST and not _pid_alive(int(m["pid"])):
        return True  # its writer crashed or was killed: nothing will ever finish it
    if m and m["host"] == _HOST and int(m["pid"]) == os.getpid():
        return False  # this process is writing it
    return age >= max(grace, FOREIGN_TEMP_MIN_AGE)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_regular(path: str | os.PathLike):
    """Open a file for reading, refusing a symlink (an adapter folder's README -> /etc/passwd)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RegistryError(f"{path} is a symbolic link; adapter folders must hold regular files only")
        raise
    return os.fdopen(fd, "rb")


def list_entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def mtime_or_none(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # removed meanwhile (a writer renamed it into place, another gc deleted it)
        return None


def _copy_hashed(source: str | os.PathLike, temp: tuple[int, str], progress: Progress | None, *,
                 durable: bool) -> Staged:
    """Copy `source` (never through a symlink) into the open temp file (fd, name), hashing on the way;
    fsynced when `durable`. The temp file is removed if anything fails."""
    fd, tmp_name = temp
    h, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out, open_regular(source) as src:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
                if progress:
                    progress(len(chunk))
            if durable:
                out.flush()
                os.fsync(out.fileno())
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return Staged(tmp_name, h.hexdigest(), size)


def sha256_file(path: str | os.PathLike, progress: Progress | None = None) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open_regular(path) as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
            if progress:
                progress(len(chunk))
    return h.hexdigest(), size


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _missing(what: str, digest: str, url: str) -> IntegrityError:
    return IntegrityError(f"{what or 'blob'}: stored blob sha256:{digest[:16]}… is missing from {url}")


def _corrupt(what: str, digest: str, actual: str) -> IntegrityError:
    return IntegrityError(
        f"{what or 'blob'}: stored blob sha256:{digest[:16]}… is corrupt (its bytes hash to "
        f"sha256:{actual[:16]}…); restore it from a backup or re-register the adapter"
    )


class BlobStore:
    """A local folder store. See `open_store` for URLs.

    Writing is two steps so that a registration can pin its blobs in the database in between (see
    registry/housekeeping.py): `stage` copies a file into `tmp/` (fsynced, hashed), `commit` moves it to
    its content address. `put_file` does both.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    # ---- layout ----------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.root / "sha256" / digest[:2] / check_hex(digest)[2:]

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    # ---- writing ---------------------------------------------------------------------------------

    def stage(self, source: str | os.PathLike, progress: Progress | None = None) -> Staged:
        """Copy `source` into the store's temp area (durable, hashed); nothing is visible yet."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return _copy_hashed(source, tempfile.mkstemp(dir=self.tmp_dir, prefix=writer_prefix("put")), progress,
                            durable=True)

    def commit(self, staged: Staged) -> bool:
        """Move a staged file to its address. True when this call created the blob.

        An existing blob is re-hashed first: if its bytes no longer match its name (bit rot, a bad
        restore) the staged copy replaces it, so re-registering the original bytes repairs the store."""
        final = self.blob_path(staged.digest)
        try:
            if final.is_file() and sha256_file(final)[0] == staged.digest:
                os.utime(final)  # a reused blob counts as recently touched for gc's grace period
                return False
            created = not final.exists()
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged.tmp, final)
            _fsync_dir(final.parent)
            return created
        finally:
            self.discard(staged)

    def discard(self, staged: Staged) -> None:
        Path(staged.tmp).unlink(missing_ok=True)

    def put_file(self, source: str | os.PathLike, progress: Progress | None = None) -> tuple[str, int]:
        """Store a file; returns (sha256 hex, size). Durable on return. (No pin: see Registry.register.)"""
        staged = self.stage(source, progress)
        self.commit(staged)
        return staged.digest, staged.size

    # ---- reading ---------------------------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def verify(self, digest: str, what: str = "") -> None:
        """Raise IntegrityError unless the blob exists and hashes to its name."""
        path = self.blob_path(digest)
        if not path.is_file():
            raise _missing(what, digest, self.url)
        actual, _ = sha256_file(path)
        if actual != digest:
            raise _corrupt(what, digest, actual)

    def copy_out(self, digest: str, dest: str | os.PathLike, what: str = "", progress: Progress | None = None) -> None:
        """Copy a blob to `dest`, verifying its hash on the way (a changed byte raises IntegrityError)."""
        path = self.blob_path(digest)
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.part")
        h = hashlib.sha256()
        try:
            with open(path, "rb") as src, open(tmp, "wb") as out:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    if progress:
                        progress(len(chunk))
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            if not path.is_file():
                raise _missing(what, digest, self.url)
            raise
        if h.hexdigest() != digest:
            tmp.unlink()
            raise _corrupt(what, digest, h.hexdigest())
        os.replace(tmp, dest)

    # ---- housekeeping ----------------------------------------------------------------------------

    def iter_blobs(self) -> Iterator[tuple[str, float]]:
        """(digest, mtime) of every stored blob (one removed while listing is skipped)."""
        base = self.root / "sha256"
        if not base.is_dir():
            return
        for fan in list_entries(base):
            for name in list_entries(fan):
                mtime = mtime_or_none(name)
                if mtime is not None and HEX64.fullmatch(fan.name + name.name):
                    yield fan.name + name.name, mtime

    def iter_temp(self) -> Iterator[tuple[str, float]]:
        """(name, mtime) of temp files (a crash mid-write leaves one; a live writer is using others)."""
        for f in list_entries(self.tmp_dir):
            mtime = mtime_or_none(f)
            if mtime is not None:
                yield str(f), mtime

    def remove_temp(self, name: str) -> None:
        Path(name).unlink(missing_ok=True)

    def delete(self, digest: str) -> int:
        """Remove a blob; returns the bytes freed (0 when another process removed it first)."""
        path = self.blob_path(digest)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size


class FsspecBlobStore(BlobStore):
    """The same layout on any fsspec filesystem (s3://, gs://, memory://, ...)."""

    def __init__(self, url: str) -> None:
        try:
            import fsspec
        except ImportError:
            raise RegistryError(f"blob store {url!r} needs fsspec and its filesystem package (pip install 'adapter-hub[s3]')")
        self.url = url.rstrip("/")
        try:
            self.fs, self.base = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as exc:
            raise RegistryError(f"blob store {url!r}: {exc} (install its fsspec filesystem, e.g. pip install s3fs)")
        self.root = Path(self.base)  # unused for I/O; kept for messages

    def _key(self, digest: str) -> str:
        return f"{self.base}/sha256/{digest[:2]}/{check_hex(digest)[2:]}"

    def blob_path(self, digest: str) -> Path:  # type: ignore[override]
        return Path(self._key(digest))

    def stage(self, source, progress=None):
        """A local hashed copy (the upload happens in `commit`, after the caller has pinned the digest)."""
        return _copy_hashed(source, tempfile.mkstemp(prefix="adapter-hub-stage-"), progress, durable=False)

    def commit(self, staged):
        key = self._key(staged.digest)
        try:
            if self.fs.exists(key):
                try:
                    self.verify(staged.digest)
                    return False
                except IntegrityError:
                    pass  # corrupt: the upload below replaces it
            created = not self.fs.exists(key)
            tmp_key = f"{self.base}/tmp/{writer_prefix('put')}{staged.digest[:16]}-{time.time_ns()}"
            self.fs.put_file(staged.tmp, tmp_key)
            self.fs.mv(tmp_key, key)  # object stores make the final key appear atomically
            return created
        finally:
            self.discard(staged)

    def exists(self, digest):
        return self.fs.exists(self._key(digest))

    def verify(self, digest, what=""):
        with tempfile.TemporaryDirectory() as tmp:
            self.copy_out(digest, Path(tmp) / "blob", what)

    def copy_out(self, digest, dest, what="", progress=None):
        key = self._key(digest)
        if not self.fs.exists(key):
            raise _missing(what, digest, self.url)
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.part")
        self.fs.get_file(key, str(tmp))
        actual, _ = sha256_file(tmp, progress)
        if actual != digest:
            tmp.unlink()
            raise _corrupt(what, digest, actual)
        os.replace(tmp, dest)

    def iter_blobs(self):
        if not self.fs.exists(f"{self.base}/sha256"):
            return
        for key, info in self.fs.find(f"{self.base}/sha256", detail=True).items():
            parts = key.rstrip("/").split("/")
            yield parts[-2] + parts[-1], _mtime(info)

    def iter_temp(self):
        if self.fs.exists(f"{self.base}/tmp"):
            for key, info in self.fs.find(f"{self.base}/tmp", detail=True).items():
                yield key, _mtime(info)

    def remove_temp(self, name):
        try:
            self.fs.rm(name)
        except FileNotFoundError:
            pass

    def delete(self, digest):
        key = self._key(digest)
        try:
            size = self.fs.size(key)
            self.fs.rm(key)
        except FileNotFoundError:
            return 0
        return size


def _mtime(info: dict) -> float:
    """Modification time from an fsspec info dict; "now" when the filesystem reports none, so that gc's
    grace period errs on the side of keeping a blob."""
    value = info.get("mtime") or info.get("LastModified") or info.get("created") or info.get("updated")
    if value is None:
        return time.time()
    return float(value.timestamp() if hasattr(value, "timestamp") else value)


def open_store(url: str) -> BlobStore:
    if "://" in url and not url.startswith("file://"):
        return FsspecBlobStore(url)
    return BlobStore(url.removeprefix("file://"))


def check_file_name(path: object, what: str = "") -> str:
    """A version's file name as stored in the database: one plain path component, never '..' or absolute."""
    if not isinstance(path, str) or not FILE_NAME.fullmatch(path) or ".." in path:
        raise IntegrityError(f"{what or 'version'}: unsafe file path {str(path)[:80]!r} in the registry database "
                             f"(a version's files are plain names inside its folder); refusing to write it")
    return path
