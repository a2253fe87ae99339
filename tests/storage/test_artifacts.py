"""ArtifactStore and verify(): atomic commits, manifests, and refusal of damaged artifacts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from aet.storage.artifacts import MANIFEST, ArtifactError, ArtifactStore, verify

FILES: dict[str, bytes] = {
    "model.safetensors": bytes(range(256)) * 64,
    "config.json": b'{"num_labels": 3}',
    "tokenizer/vocab.txt": b"[PAD]\n[UNK]\nhello\n",
}


@pytest.fixture
def artifacts(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "models")


def _stage(store: ArtifactStore, files: dict[str, bytes] = FILES) -> Path:
    staged = store.stage()
    for name, body in files.items():
        (staged / name).parent.mkdir(parents=True, exist_ok=True)
        (staged / name).write_bytes(body)
    return staged


@pytest.fixture
def committed(artifacts: ArtifactStore) -> tuple[Path, str]:
    """A committed artifact v0001: its path and digest."""
    return artifacts.commit(_stage(artifacts), "v0001")


def test_commit_writes_manifest_and_returns_its_digest(artifacts: ArtifactStore) -> None:
    """The manifest lists every file's size and sha256; the digest is the manifest's sha256."""
    staged = _stage(artifacts)
    path, digest = artifacts.commit(staged, "v0001")
    assert path == artifacts.path_of("v0001") and path.is_dir()
    assert not staged.exists()
    body = (path / MANIFEST).read_bytes()
    assert digest == hashlib.sha256(body).hexdigest()
    manifest = json.loads(body)
    assert manifest["version"] == "v0001"
    assert manifest["files"] == {
        name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in FILES.items()
    }
    for name, data in FILES.items():
        assert (path / name).read_bytes() == data


def test_verify_accepts_an_intact_artifact(committed: tuple[Path, str]) -> None:
    """verify() returns quietly for an untouched artifact and its digest."""
    path, digest = committed
    verify(path, digest)
    verify(Path(str(path)), digest)


def test_verify_refuses_a_truncated_file(committed: tuple[Path, str]) -> None:
    """A file shorter than recorded is reported with its name and sizes."""
    path, digest = committed
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match=r"model\.safetensors has \d+ bytes, expected \d+"):
        verify(path, digest)


def test_verify_refuses_a_modified_byte(committed: tuple[Path, str]) -> None:
    """One flipped byte, same size, fails the file's sha256."""
    path, digest = committed
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[1000] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.safetensors does not match its sha256"):
        verify(path, digest)


def test_verify_refuses_a_missing_file(committed: tuple[Path, str]) -> None:
    """A file listed in the manifest but absent is named."""
    path, digest = committed
    (path / "tokenizer" / "vocab.txt").unlink()
    with pytest.raises(ArtifactError, match=r"missing file tokenizer/vocab\.txt"):
        verify(path, digest)


def test_verify_refuses_a_missing_manifest(committed: tuple[Path, str]) -> None:
    """Without its manifest an artifact cannot be verified."""
    path, digest = committed
    (path / MANIFEST).unlink()
    with pytest.raises(ArtifactError, match=r"has no manifest\.json"):
        verify(path, digest)


def test_verify_refuses_a_missing_directory(tmp_path: Path) -> None:
    """A path that does not exist is refused, not crashed on."""
    with pytest.raises(ArtifactError, match="no manifest"):
        verify(tmp_path / "nowhere", "0" * 64)


def test_verify_refuses_a_wrong_digest(committed: tuple[Path, str]) -> None:
    """A digest other than the manifest's (e.g. the registry names another artifact) is refused."""
    path, digest = committed
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    with pytest.raises(ArtifactError, match=rf"manifest sha256 {digest} does not match the registry's {wrong}"):
        verify(path, wrong)


def test_verify_refuses_an_edited_manifest(committed: tuple[Path, str]) -> None:
    """Rewriting the manifest to match a tampered file changes the digest, so it is caught."""
    path, digest = committed
    (path / "config.json").write_bytes(b'{"num_labels": 2}')
    manifest = json.loads((path / MANIFEST).read_bytes())
    manifest["files"]["config.json"]["sha256"] = hashlib.sha256(b'{"num_labels": 2}').hexdigest()
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="does not match the registry's"):
        verify(path, digest)


def test_verify_refuses_an_unlisted_file(committed: tuple[Path, str]) -> None:
    """A file added after commit (e.g. a stray pickle) means the directory is not exactly the artifact."""
    path, digest = committed
    (path / "pytorch_model.bin").write_bytes(b"not in the manifest")
    with pytest.raises(ArtifactError, match=r"pytorch_model\.bin.*not in the manifest"):
        verify(path, digest)


def test_nested_file_named_manifest_is_covered(artifacts: ArtifactStore) -> None:
    """Only the top-level manifest is excluded from hashing; a nested manifest.json is verified too."""
    path, digest = artifacts.commit(_stage(artifacts, {**FILES, "extra/manifest.json": b"{}"}), "v0001")
    assert "extra/manifest.json" in json.loads((path / MANIFEST).read_bytes())["files"]
    (path / "extra" / "manifest.json").write_bytes(b"[]")
    with pytest.raises(ArtifactError, match=r"extra/manifest\.json"):
        verify(path, digest)


def test_commit_refuses_an_existing_version(artifacts: ArtifactStore, committed: tuple[Path, str]) -> None:
    """A second commit under the same version fails and leaves both artifacts untouched."""
    path, digest = committed
    staged = _stage(artifacts, {"model.safetensors": b"other weights"})
    with pytest.raises(ArtifactError, match="already exists"):
        artifacts.commit(staged, "v0001")
    verify(path, digest)
    assert (staged / "model.safetensors").read_bytes() == b"other weights"


def test_commit_refuses_an_empty_staging_dir(artifacts: ArtifactStore) -> None:
    """An empty artifact is never sealed."""
    with pytest.raises(ArtifactError, match="empty"):
        artifacts.commit(artifacts.stage(), "v0001")
    assert not artifacts.path_of("v0001").exists()


def test_staged_dirs_are_invisible_until_commit(artifacts: ArtifactStore) -> None:
    """A model being written lives in a staging dir; only commit puts it under its version."""
    staged = _stage(artifacts)
    other = artifacts.stage()
    assert staged != other and not any(other.iterdir())
    assert not artifacts.path_of("v0001").exists()
    assert artifacts.root not in (staged.parent, other.parent)
    assert [p.name for p in artifacts.root.iterdir() if not p.name.startswith(".")] == []
    artifacts.commit(staged, "v0001")
    assert artifacts.path_of("v0001").is_dir()


def test_discard_and_clean_staging_remove_leftovers(artifacts: ArtifactStore, committed: tuple[Path, str]) -> None:
    """discard() drops one staged dir; clean_staging() drops all, never a committed artifact."""
    path, digest = committed
    one, two = _stage(artifacts), _stage(artifacts)
    artifacts.discard(one)
    assert not one.exists() and two.exists()
    artifacts.clean_staging()
    assert not two.exists()
    verify(path, digest)
    assert artifacts.stage().is_dir()  # staging works again after cleaning
