"""The one on-disk store for everything lmadapt caches or checkpoints: write atomically, read verified.

An entry is a directory named by its key: a content hash for caches (token cache, reference log-probs,
compiled HINT modules), `step-00000042` for checkpoints. `write_entry` writes it in a staged directory
beside its final place: the caller's files (safetensors and JSON only, never pickles) are fsynced, then
`manifest.json` (kind, format version, key, the caller's metadata and the size and sha256 of every file,
itself checksummed) is written last and fsynced, the staged directory is fsynced, renamed into place
atomically, and the parent directory fsynced. `open_entry` checks the manifest and every file against it
before anything is used, so a truncated or bit-flipped file, a missing manifest or an entry cut short by
a crash raises `CorruptEntry` instead of being read.

Caches go through `load_or_build`: a corrupt entry is rebuilt with a warning, and building is serialised
by a file lock beside the entry, so concurrent processes (the ranks of one run, or separate runs sharing
a cache directory) build an entry once and the others read it. Checkpoints (train.checkpoint) skip a
corrupt entry for the previous one. Staged and discarded directories left by a dead process are removed
the next time an entry is written beside them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from safetensors import SafetensorError

from lmadapt.errors import LmadaptError
from lmadapt.faults import fault

log = logging.getLogger("lmadapt")

MANIFEST = "manifest.json"
STORE_FORMAT = "lmadapt-store/1"
_STAGED = ".tmp-"  # an entry being written
_DISCARDED = ".old-"  # an entry being removed (renamed away first, so it is never half-deleted in place)

T = TypeVar("T")


class CorruptEntry(LmadaptError):
    """An entry that is incomplete, damaged, or not the kind/version/key it is read as."""


class StoreFull(LmadaptError):
    """The disk (or quota, or file-size limit) ran out while an entry was written; nothing was stored."""


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@dataclass(frozen=True)
class Entry:
    """A verified entry: every file under `path` matches the manifest. `meta` is the caller's metadata."""

    path: Path
    meta: dict[str, Any]


def is_plain_name(name: str) -> bool:
    """Whether `name` names something directly inside one directory: joined to it, it can never point
    elsewhere (no separator, not '.', '..', empty, absolute or NUL). For names read from data files."""
    return name not in ("", ".", "..") and not any(c in name for c in ("/", "\\", "\0"))


def content_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, or of every file (relative path + bytes) under a directory."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path)).encode() if path.is_dir() else b"")
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def write_entry(
    path: str | Path,
    kind: str,
    version: int,
    write_files: Callable[[Path], dict[str, Any]],
    *,
    replace: bool,
) -> Entry:
    """Write the entry `path` atomically; `write_files(directory)` puts its files (flat) in `directory`
    and returns JSON metadata for the manifest.

    replace=True swaps out an existing entry (a checkpoint re-saved after a resume); replace=False keeps
    one that appeared meanwhile (another process stored the same content-addressed key).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path.parent)
    staged = path.parent / f"{_STAGED}{path.name}+{_owner()}+{secrets.token_hex(4)}"
    staged.mkdir()
    try:
        meta = write_files(staged)
        fault(f"{kind}/staged")
        files = {}
        for file in sorted(staged.iterdir()):
            if not file.is_file():
                raise ValueError(f"store entries are flat; {file.name} is not a file")
            _fsync(file)
            files[file.name] = {"size": file.stat().st_size, "sha256": content_digest(file)}
        body = {
            "format": STORE_FORMAT,
            "kind": kind,
            "version": version,
            "key": path.name,
            "meta": meta,
            "files": files,
        }
        _write_durably(staged / MANIFEST, json.dumps({**body, "sha256": _json_digest(body)}, indent=1))
        _fsync(staged)
        if path.exists():
            if not replace:
                log.info("%s was stored meanwhile by another process; keeping that copy", path)
                return Entry(path, meta)
            discard(path)
        fault(f"{kind}/before-rename")
        try:
            os.rename(staged, path)
        except OSError:  # another process renamed the same key into place first
            if replace or not path.is_dir():
                raise
            log.info("%s was stored meanwhile by another process; keeping that copy", path)
        fault(f"{kind}/after-rename")
        _fsync(path.parent)
        return Entry(path, meta)
    except (OSError, SafetensorError) as e:
        if not is_disk_full(e):
            raise
        raise StoreFull(
            f"{kind} {path}: {_reason(e)} while writing it; nothing of it was stored and earlier entries "
            "are intact: free space, then rerun (a training run: with --resume)"
        ) from None
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def is_disk_full(e: BaseException) -> bool:
    """Whether `e` says the disk, a quota or the file-size limit ran out (safetensors reports the OS
    error only in its message)."""
    if isinstance(e, OSError):
        return e.errno in _FULL
    return any(f"(os error {code})" in str(e) for code in _FULL)


def _reason(e: BaseException) -> str:
    return e.strerror or str(e) if isinstance(e, OSError) else str(e).splitlines()[0]


def open_entry(path: str | Path, kind: str, version: int) -> Entry:
    """The entry at `path` after checking its manifest and every file's size and sha256; CorruptEntry
    (naming what is wrong) when it is missing, incomplete, damaged, or of another kind or version."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorruptEntry(f"{path}: no {MANIFEST} (missing or incompletely written entry)") from None
    except (OSError, ValueError) as e:
        raise CorruptEntry(f"{path}: unreadable {MANIFEST} ({e})") from None
    if not isinstance(manifest, dict):
        raise CorruptEntry(f"{path}: {MANIFEST} is not an object")
    body = {name: value for name, value in manifest.items() if name != "sha256"}
    if manifest.get("sha256") != _json_digest(body):
        raise CorruptEntry(f"{path}: {MANIFEST} does not match its checksum")
    found = (body.get("format"), body.get("kind"), body.get("version"), body.get("key"))
    if found != (STORE_FORMAT, kind, version, path.name):
        raise CorruptEntry(
            f"{path}: holds {found[1]} v{found[2]} for key {found[3]}, expected {kind} v{version} for key "
            f"{path.name}"
        )
    for name, expected in body["files"].items():
        file = path / name
        if not is_plain_name(name) or name == MANIFEST:
            raise CorruptEntry(f"{path}: {MANIFEST} names an invalid file {name!r}")
        if not file.is_file():
            raise CorruptEntry(f"{path}: {name} is missing")
        if file.stat().st_size != expected["size"]:
            raise CorruptEntry(f"{path}: {name} has {file.stat().st_size} bytes, expected {expected['size']}")
        if content_digest(file) != expected["sha256"]:
            raise CorruptEntry(f"{path}: {name} does not match its sha256")
    return Entry(path, body["meta"])


def load_or_build(
    path: str | Path,
    kind: str,
    version: int,
    build: Callable[[], T],
    save: Callable[[T, Path], dict[str, Any]],
    load: Callable[[Entry], T],
) -> tuple[T, bool]:
    """(value, hit): `load` of the verified cache entry at `path`, else `build()`'s value stored there
    with `save(value, directory)` (-> manifest metadata).

    `load` raises CorruptEntry when the entry does not fit the request (another count, run, ...). A
    corrupt entry is rebuilt with a warning. The whole look-up holds a file lock beside the entry, so
    concurrent callers build it once.
    """
    path = Path(path)
    with _lock(path):
        if path.exists():
            try:
                value = load(open_entry(path, kind, version))
                log.info("%s: cache hit %s", kind, path)
                return value, True
            except (CorruptEntry, SafetensorError) as e:
                log.warning("%s: cache entry unusable, rebuilding: %s", kind, e)
                discard(path)
        value = build()
        write_entry(path, kind, version, lambda directory: save(value, directory), replace=False)
        log.info("%s: stored %s", kind, path)
        return value, False


def discard(path: str | Path) -> None:
    """Remove an entry: renamed out of its place first, so no half-deleted entry is ever found there."""
    path = Path(path)
    away = path.parent / f"{_DISCARDED}{path.name}+{_owner()}+{secrets.token_hex(4)}"
    try:
        os.rename(path, away)
    except FileNotFoundError:
        return
    shutil.rmtree(away, ignore_errors=True)


def clean_stale(root: str | Path) -> None:
    """Remove staged and discarded directories under `root` left by processes of this host that died."""
    root = Path(root)
    if not root.is_dir():
        return
    host = socket.gethostname()
    for leftover in root.iterdir():
        if not leftover.name.startswith((_STAGED, _DISCARDED)):
            continue
        parts = leftover.name.rsplit("+", 3)
        if len(parts) == 4 and parts[1] == host and parts[2].isdigit() and not _alive(int(parts[2])):
            shutil.rmtree(leftover, ignore_errors=True)


def _owner() -> str:
    # Host and pid name the writer, so a cleaner never removes a live process's staged directory
    # (other hosts' leftovers on a shared filesystem are left alone: their pids mean nothing here).
    return f"{socket.gethostname()}+{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `.<name>.lock` beside `path` (released when the holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _json_digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _write_durably(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
