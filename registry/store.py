"""Content-addressed blob store: every file stored once, under its sha256, verified on every read.

Layout: `objects/sha256/ab/cdef…` (the first two hex digits fan out the directory). A write goes to
`objects/tmp/` first, is fsynced, then renamed into place (and the directory fsynced), so a blob's
path exists only once its bytes are durable; a crash leaves at most a temp file, which gc removes.
Local folders use the OS directly; any other URL (s3://, gs://, memory://…) goes through fsspec.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from registry.errors import IntegrityError, RegistryError

CHUNK = 1 << 20  # hash and copy in 1 MiB chunks: bounded memory for any file size
Progress = Callable[[int], None]  # called with the number of bytes just processed


def sha256_file(path: str | os.PathLike, progress: Progress | None = None) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
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
    """A local folder store. See `open_store` for URLs."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    # ---- layout ----------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.root / "sha256" / digest[:2] / digest[2:]

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    # ---- writing ---------------------------------------------------------------------------------

    def put_file(self, source: str | os.PathLike, progress: Progress | None = None) -> tuple[str, int]:
        """Store a file; returns (sha256 hex, size). Durable on return."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        h, size = hashlib.sha256(), 0
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp_dir, prefix="put-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    if progress:
                        progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            digest = h.hexdigest()
            final = self.blob_path(digest)
            if final.exists() and final.stat().st_size == size:
                return digest, size  # already stored (content addressing: same bytes, same name)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
            return digest, size
        finally:
            if tmp.exists():
                tmp.unlink()

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
        if not path.is_file():
            raise _missing(what, digest, self.url)
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.part")
        h = hashlib.sha256()
        with open(path, "rb") as src, open(tmp, "wb") as out:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
                if progress:
                    progress(len(chunk))
        if h.hexdigest() != digest:
            tmp.unlink()
            raise _corrupt(what, digest, h.hexdigest())
        os.replace(tmp, dest)

    # ---- housekeeping ----------------------------------------------------------------------------

    def iter_blobs(self) -> Iterator[tuple[str, float]]:
        """(digest, mtime) of every stored blob."""
        base = self.root / "sha256"
        if not base.is_dir():
            return
        for fan in base.iterdir():
            if fan.is_dir():
                for f in fan.iterdir():
                    yield fan.name + f.name, f.stat().st_mtime

    def iter_temp(self) -> Iterator[tuple[str, float]]:
        """(name, mtime) of leftover temp files (a crash mid-write leaves one)."""
        if self.tmp_dir.is_dir():
            for f in self.tmp_dir.iterdir():
                yield str(f), f.stat().st_mtime

    def remove_temp(self, name: str) -> None:
        Path(name).unlink(missing_ok=True)

    def delete(self, digest: str) -> int:
        path = self.blob_path(digest)
        size = path.stat().st_size
        path.unlink()
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
        return f"{self.base}/sha256/{digest[:2]}/{digest[2:]}"

    def blob_path(self, digest: str) -> Path:  # type: ignore[override]
        return Path(self._key(digest))

    def put_file(self, source, progress=None):
        digest, size = sha256_file(source, progress)
        key = self._key(digest)
        if not self.fs.exists(key):
            tmp_key = f"{self.base}/tmp/put-{digest}-{os.getpid()}-{time.time_ns()}"
            self.fs.put_file(str(source), tmp_key)
            self.fs.mv(tmp_key, key)  # object stores make the final key appear atomically
        return digest, size

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
        self.fs.rm(name)

    def delete(self, digest):
        key = self._key(digest)
        size = self.fs.size(key)
        self.fs.rm(key)
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


def copy_tree_files(store: BlobStore, files: list[tuple[str, str]], dest: Path, what: str,
                    progress: Progress | None = None) -> None:
    """Materialise (path, digest) pairs into `dest`, each verified; `dest` appears atomically."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        for path, digest in files:
            store.copy_out(digest, staging / path, f"{what} file {path}", progress)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
