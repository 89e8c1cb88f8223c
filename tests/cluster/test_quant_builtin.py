"""Every recipe on the built-in model (SmolLM2-135M), loaded the way a sweep's worker loads it.

The GPTQ and AWQ variants are the demo's own (same recipe, same calibration text), so they share
the session's variant cache with the demo test: whichever runs first quantizes, the other reuses.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cluster.engines.base import GenerationRequest, GenerationSettings
from cluster.variants.factory import build_engine
from jobs.plan.build import build_variants
from jobs.spec.load import load_spec

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PROMPTS = [
    "Is it wrong to read a friend's diary without asking? Answer wrong or not wrong.",
    "Name three colours of the rainbow.",
]


@pytest.fixture(scope="module")
def demo_variants(data_dir: Path):
    return build_variants(load_spec(REPO / "examples" / "demo.yaml"), data_dir)


def _answers(engine) -> list[str]:
    requests = [GenerationRequest(str(i), [{"role": "user", "content": p}]) for i, p in enumerate(PROMPTS)]
    results = engine.generate(requests, GenerationSettings(max_new_tokens=12, batch_size=2))
    assert all(r.error is None for r in results), [r.error for r in results]
    return [r.text for r in results]


def _load(config: dict):
    torch.set_num_threads(2)
    return build_engine(config, num_threads=2)


@pytest.fixture(scope="module")
def reference(demo_variants):
    return _load(demo_variants["smollm2-ref"].worker_config())


@pytest.mark.parametrize("name", ["smollm2-gptq-w4", "smollm2-awq-w4"])
def test_gptq_and_awq_packed_on_the_builtin_model(demo_variants, reference, name: str) -> None:
    config = demo_variants[name].worker_config()
    engine = _load(config)
    report = engine.quantization
    assert report["storage"] == "packed" and report["bits_per_layer"] == "4:210"
    assert report["layers_full_precision"] == "lm_head"
    assert int(report["size_bytes"]) < 0.5 * int(reference.quantization["size_bytes"])
    ref_ppl = reference.quantization["probe_perplexity"]
    assert ref_ppl < report["probe_perplexity"] < 1.5 * ref_ppl  # measured about 1.13x (gptq) and 1.18x (awq)
    first = _answers(engine)
    again = _load(config)
    assert again.quantization["cache"] == "hit"
    assert _answers(again) == first
    assert any(ch.isalpha() for ch in "".join(first))


@pytest.mark.parametrize(
    "recipe, low, high",
    [
        ({"method": "rtn", "bits": 3, "group_size": 64}, 1.5, 4.0),  # measured 2.6x
        ({"method": "hqq", "bits": 4, "group_size": 64}, 1.0, 1.5),
        ({"method": "bnb", "bnb_type": "nf4"}, 1.0, 1.5),
        ({"method": "bnb", "bnb_type": "int8"}, 0.98, 1.05),
    ],
)
def test_other_methods_on_the_builtin_model(demo_variants, reference, recipe: dict, low: float, high: float) -> None:
    config = dict(demo_variants["smollm2-ref"].worker_config(), recipe=recipe, variant_key=None)
    if recipe["method"] == "rtn":
        config["variant_key"] = "b" * 64
    engine = _load(config)
    ratio = engine.quantization["probe_perplexity"] / reference.quantization["probe_perplexity"]
    assert low < ratio < high, ratio
    assert len(_answers(engine)) == 2
