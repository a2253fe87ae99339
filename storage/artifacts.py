"""Model artifacts on disk: written atomically, identified and verified by sha256.

An artifact is a directory (safetensors weights, config, tokenizer) plus a
``manifest.json`` listing every file's size and sha256. The artifact's digest
is the sha256 of that manifest, so one hash covers every byte. A directory
only appears under its final name once complete (staged, fsynced, renamed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from aet.pipeline.ports import ArtifactError

MANIFEST = "manifest.json"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(directory: Path) -> list[Path]:
    """Every file under ``directory`` except the top-level manifest (a nested manifest.json is data)."""
    top = directory / MANIFEST
    return sorted(p for p in directory.rglob("*") if p.is_file() and p != top)


def build_manifest(directory: Path) -> dict[str, dict[str, int | str]]:
    """Size and sha256 of every file under ``directory`` except the manifest itself."""
    files = _files(directory)
    return {str(p.relative_to(directory)): {"size": p.stat().st_size, "sha256": file_sha256(p)} for p in files}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArtifactStore:
    """A directory of model artifacts, one subdirectory per version (the :class:`~aet.pipeline.ports.Artifacts`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._staging = self.root / ".staging"

    def path_of(self, version: str) -> Path:
        return self.root / version

    def stage(self) -> Path:
        """A fresh, empty staging directory to save a model into."""
        path = self._staging / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def commit(self, staged: Path, version: str) -> tuple[Path, str]:
        """Seal a staged directory as ``version``: write its manifest and move it into place.

        Returns the final path and the artifact digest.
        """
        final = self.path_of(version)
        if final.exists():
            raise ArtifactError(f"artifact {final} already exists")
        manifest = build_manifest(staged)
        if not manifest:
            raise ArtifactError(f"staged artifact {staged} is empty")
        body = json.dumps({"version": version, "files": manifest}, sort_keys=True, indent=1).encode()
        with open(staged / MANIFEST, "wb") as f:
            f.write(body)
        for p in staged.rglob("*"):
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        _fsync_dir(staged)
        os.rename(staged, final)
        _fsync_dir(self.root)
        return final, hashlib.sha256(body).hexdigest()

    def discard(self, staged: Path) -> None:
        shutil.rmtree(staged, ignore_errors=True)

    def clean_staging(self) -> None:
        """Remove leftovers of writes that crashed before their commit."""
        shutil.rmtree(self._staging, ignore_errors=True)


def verify(directory: Path, digest: str) -> None:
    """Raise :class:`ArtifactError` unless ``directory`` holds exactly the artifact ``digest`` names."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"artifact {directory} has no {MANIFEST}")
    body = manifest_path.read_bytes()
    actual = hashlib.sha256(body).hexdigest()
    if actual != digest:
        raise ArtifactError(f"artifact {directory}: manifest sha256 {actual} does not match the registry's {digest}")
    listed = json.loads(body)["files"]
    unlisted = sorted({str(p.relative_to(directory)) for p in _files(directory)} - set(listed))
    if unlisted:
        raise ArtifactError(f"artifact {directory}: {', '.join(unlisted)} not in the manifest")
    for name, entry in listed.items():
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"artifact {directory}: missing file {name}")
        size = path.stat().st_size
        if size != entry["size"]:
            raise ArtifactError(f"artifact {directory}: {name} has {size} bytes, expected {entry['size']} (truncated?)")
        if file_sha256(path) != entry["sha256"]:
            raise ArtifactError(f"artifact {directory}: {name} does not match its sha256")
