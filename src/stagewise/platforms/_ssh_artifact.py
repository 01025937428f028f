"""A release's artifact: one content-hashed .tar.gz, made once on the controller, copied once per host.

A directory is packed deterministically — entries sorted, times, owners and
modes normalised (only the executable bit kept), gzip without a timestamp —
so that the same files give the same hash on every run, and a host that
already holds a release unpacked from that hash is never sent it again. A
given .tar.gz is taken as it is; its hash is that of its bytes.

Packed archives are kept under `<state>/ssh/artifacts/<sha256>.tar.gz`; a
directory is packed again only when a file in it changed (size or mtime).
It never follows a symbolic link out of the directory: links are stored as
links.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from stagewise.basics import files
from stagewise.errors import PlatformRefusedError


@dataclass(frozen=True)
class Artifact:
    path: Path
    sha256: str
    size: int


def _fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    entries = []
    for path in sorted(directory.rglob("*")):
        stat = path.lstat()
        entries.append((str(path.relative_to(directory)), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


def _normalised(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if info.isdir() or info.mode & 0o111:
        info.mode = 0o755
    else:
        info.mode = 0o644
    return info


def _pack(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped, \
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(directory.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(directory)), recursive=False, filter=_normalised)
    return buffer.getvalue()


class Artifacts:
    """Packs and hashes artifacts, remembering what it packed."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self._packed: dict[str, tuple[tuple[tuple[str, int, int], ...], Artifact]] = {}

    def prepare(self, source: str) -> Artifact:
        """The artifact of `source` (a directory or a .tar.gz on this machine)."""
        path = Path(source).expanduser()
        if path.is_dir():
            return self._directory(path)
        if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
            data = path.read_bytes()
            return Artifact(path=path, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        raise PlatformRefusedError(f"release.artifact {source!r} is neither a directory nor a .tar.gz file here "
                                   f"(paths are read by the server, relative to {os.getcwd()})")

    def _directory(self, directory: Path) -> Artifact:
        key = str(directory.resolve())
        try:
            fingerprint = _fingerprint(directory)
        except OSError as exc:
            raise PlatformRefusedError(f"cannot read release.artifact {directory}: {exc}") from exc
        known = self._packed.get(key)
        if known is not None and known[0] == fingerprint and known[1].path.exists():
            return known[1]
        data = _pack(directory)
        sha = hashlib.sha256(data).hexdigest()
        self.store.mkdir(parents=True, exist_ok=True)
        target = self.store / f"{sha}.tar.gz"
        if not target.exists():
            files.write_atomic(target, data)
        artifact = Artifact(path=target, sha256=sha, size=len(data))
        self._packed[key] = (fingerprint, artifact)
        return artifact
