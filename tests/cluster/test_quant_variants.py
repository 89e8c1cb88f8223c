"""Every recipe through load_variant on the tiny model: build once into the cache, reload identically, probe."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cluster.engines.base import GenerationRequest, GenerationSettings
from cluster.quantization.digest import checkpoint_digest
from cluster.quantization.recipes import QuantRecipe
from cluster.variants.cache import META_FILE, VariantCache
from cluster.variants.key import variant_key
from cluster.variants.load import VariantSource, load_variant
from tests.support.tiny_model import _CORPUS

REPO = Path(__file__).resolve().parents[2]
PROMPTS = [[{"role": "user", "content": text}] for text in _CORPUS[:4]]
SETTINGS = GenerationSettings(max_new_tokens=6, temperature=0.0, batch_size=4)

RECIPES = {
    "ref": QuantRecipe(),
    "rtn-w4": QuantRecipe(method="rtn", bits=4, group_size=32),
    "gptq-w4": QuantRecipe(method="gptq", bits=4, group_size=32, calibration={"samples": 8, "seq_len": 64}),
    "awq-w3": QuantRecipe(method="awq", bits=3, group_size=32, calibration={"samples": 8, "seq_len": 64}),
    "rtn-w8-packed": QuantRecipe(method="rtn", bits=8, group_size=32, storage="packed"),
    "hqq-w4": QuantRecipe(method="hqq", bits=4, group_size=32),
    "bnb-nf4": QuantRecipe(method="bnb", bnb_type="nf4"),
    "gptq-w3-mixed": QuantRecipe(
        method="gptq",
        bits=3,
        group_size=32,
        calibration={"samples": 8, "seq_len": 64},
        overrides=[{"blocks": [0], "bits": 8}],
    ),
}


def _source(model_dir: Path, recipe: QuantRecipe, cache: Path) -> VariantSource:
    texts = list(_CORPUS[:8]) if recipe.calibration else None
    key = variant_key(f"local:{model_dir}", recipe.key_fields(), "digest" if texts else None, "float32")
    return VariantSource(
        model_path=model_dir, recipe=recipe, variant_key=key, calibration_texts=texts, variant_cache=str(cache)
    )


def _outputs(engine) -> list[str]:
    requests = [GenerationRequest(str(i), p) for i, p in enumerate(PROMPTS)]
    results = engine.generate(requests, SETTINGS)
    assert all(r.error is None for r in results), [r.error for r in results]
    return [r.text for r in results]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("variants")
    engines = {name: load_variant(_source(tiny_model_dir, r, cache), quality_probe=True) for name, r in RECIPES.items()}
    return cache, engines


def test_every_recipe_loads_generates_and_reports(loaded) -> None:
    _cache, engines = loaded
    expected_storage = {
        "ref": "none",
        "rtn-w4": "simulated",
        "gptq-w4": "packed",
        "awq-w3": "simulated",
        "rtn-w8-packed": "packed",
        "hqq-w4": "load-time",
        "bnb-nf4": "load-time",
        "gptq-w3-mixed": "simulated",
    }
    for name, engine in engines.items():
        report = engine.quantization
        assert report["storage"] == expected_storage[name], name
        assert math.isfinite(report["probe_perplexity"]) and report["probe_tokens"] > 100, name
        assert int(report["size_bytes"]) > 0, name
        assert all(isinstance(o, str) for o in _outputs(engine)), name
        assert len(report["loaded_sha256"]) == 64, name  # what this replica holds in memory
        if report["storage"] == "load-time":  # nothing written: the variant's digest is the in-memory one
            assert report["weights_sha256"] == report["loaded_sha256"], name
    assert engines["gptq-w3-mixed"].quantization["bits_per_layer"] == "3:7,8:7"


def test_quantized_variants_change_the_model(loaded) -> None:
    _cache, engines = loaded
    reference = engines["ref"].quantization["probe_perplexity"]
    for name in ("rtn-w4", "gptq-w4", "awq-w3", "hqq-w4", "bnb-nf4"):
        assert engines[name].quantization["probe_perplexity"] != pytest.approx(reference, rel=1e-6), name


def test_cached_variants_are_built_once_and_reload_to_identical_outputs(loaded, tiny_model_dir: Path) -> None:
    cache, engines = loaded
    cached = [n for n, r in RECIPES.items() if r.is_cached]
    assert len(VariantCache(str(cache)).entries()) == len(cached)
    for name in cached:
        assert engines[name].quantization["cache"] == "built"
        again = load_variant(_source(tiny_model_dir, RECIPES[name], cache), quality_probe=True)
        assert again.quantization["cache"] == "hit", name
        assert _outputs(again) == _outputs(engines[name]), name
        assert again.quantization["probe_perplexity"] == pytest.approx(engines[name].quantization["probe_perplexity"])
        # The build recorded the digest of the weights it wrote; a reload finds the same weights.
        entry = VariantCache(str(cache)).lookup(_source(tiny_model_dir, RECIPES[name], cache).variant_key or "")
        assert entry is not None and entry.meta["weights_sha256"] == checkpoint_digest(entry.path), name
        assert again.quantization["weights_sha256"] == engines[name].quantization["weights_sha256"], name
        assert again.quantization["loaded_sha256"] == engines[name].quantization["loaded_sha256"], name
    digests = {engines[name].quantization["weights_sha256"] for name in cached}
    assert len(digests) == len(cached)


def test_an_entry_built_before_digests_gets_its_digest_recorded_on_load(loaded, tiny_model_dir: Path) -> None:
    cache, engines = loaded
    source = _source(tiny_model_dir, RECIPES["rtn-w4"], cache)
    meta_file = cache / str(source.variant_key) / META_FILE
    old = {k: v for k, v in json.loads(meta_file.read_text()).items() if k != "weights_sha256"}
    meta_file.write_text(json.dumps(old))
    again = load_variant(source, quality_probe=False)
    assert again.quantization["weights_sha256"] == engines["rtn-w4"].quantization["weights_sha256"]
    recorded = json.loads(meta_file.read_text())
    assert recorded["weights_sha256"] == engines["rtn-w4"].quantization["weights_sha256"]
    assert recorded["weights_sha256_recorded"] == "at load" and recorded["key"] == source.variant_key


def test_two_processes_asking_for_one_variant_quantize_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from cluster.quantization.recipes import QuantRecipe
        from cluster.variants.load import VariantSource, prepare_cached_variant
        from tests.support.tiny_model import _CORPUS
        recipe = QuantRecipe(method="gptq", bits=4, group_size=32, calibration={{"samples": 8, "seq_len": 64}})
        source = VariantSource(model_path=Path({str(tiny_model_dir)!r}), recipe=recipe, variant_key="ab" * 32,
                               calibration_texts=list(_CORPUS), variant_cache={str(tmp_path / "cache")!r})
        path, report = prepare_cached_variant(source, dtype="float32", device="cpu", trust_remote_code=False)
        print(json.dumps({{"path": str(path), "cache": report["cache"]}}))
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["cache"] for r in results) == ["built", "hit"]
    assert results[0]["path"] == results[1]["path"]
