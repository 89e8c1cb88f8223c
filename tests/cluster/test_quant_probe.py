"""The perplexity probe and qtrust's built-in text sets."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from cluster.quantization.probe import load_probe_texts, probe_perplexity
from cluster.quantization.rtn import quantize_model_rtn
from cluster.quantization.texts import TEXT_SETS, load_text_set, split_paragraphs

#: Built-in model, measured: fp32 28.0, rtn w8 g64 28.1, w4 35.1, w3 71.8, w2 about 1.2e6.
BUILTIN_FP32_MAX_PERPLEXITY = 200.0


def _sentences(paragraph: str) -> list[str]:
    """Split at sentence ends followed by a capital or an opening quote (dialogue stays whole)."""
    return [s for s in re.split(r'(?:(?<=[.?!])|(?<=[.?!]"))\s+(?=["A-Z])', paragraph) if s]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _load(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


# ------------------------------------------------------------------------------ text sets


def test_text_sets_ship_with_the_package() -> None:
    probe = load_text_set("probe")
    calibration = load_text_set("calibration")
    assert probe == load_probe_texts()
    assert 20 <= len(probe) <= 30
    assert len(calibration) >= 75
    for paragraph in probe:
        assert 1 <= len(_sentences(paragraph)) <= 3, paragraph
        assert "\n" not in paragraph
    for paragraph in calibration:
        assert 2 <= len(_sentences(paragraph)) <= 5, paragraph
    assert len(set(probe)) == len(probe) and len(set(calibration)) == len(calibration)
    shared = {s for p in probe for s in _sentences(p)} & {s for p in calibration for s in _sentences(p)}
    assert shared == set()
    assert TEXT_SETS == ("probe", "calibration")
    with pytest.raises(ValueError, match="built-in sets: probe, calibration"):
        load_text_set("wikitext")


def test_split_paragraphs() -> None:
    text = "First line\nwrapped here.\n\n\n  Second one.  \r\n\r\nThird.\n"
    assert split_paragraphs(text) == ["First line wrapped here.", "Second one.", "Third."]
    assert split_paragraphs("\n\n") == []


# ---------------------------------------------------------------------------- perplexity


def test_tiny_model_perplexity_is_finite(tiny_model_dir: Path, tokenizer) -> None:
    model = _load(tiny_model_dir)
    result = probe_perplexity(model, tokenizer)
    expected_tokens = sum(len(tokenizer(t)["input_ids"][:256]) - 1 for t in load_probe_texts())
    assert result["tokens"] == expected_tokens
    assert math.isfinite(result["perplexity"]) and result["perplexity"] > 1.0


def test_perplexity_is_token_weighted_and_unpadded(tiny_model_dir: Path, tokenizer) -> None:
    model = _load(tiny_model_dir)
    short, long = "She said yes.", "The capital of France is Paris, and the capital of Italy is Rome."
    both = probe_perplexity(model, tokenizer, [short, long])
    parts = [probe_perplexity(model, tokenizer, [t]) for t in (short, long)]
    weighted = sum(p["tokens"] * math.log(p["perplexity"]) for p in parts) / sum(p["tokens"] for p in parts)
    assert both["tokens"] == parts[0]["tokens"] + parts[1]["tokens"]
    assert math.isclose(math.log(both["perplexity"]), weighted, rel_tol=1e-6)
    # Independently: transformers' own mean loss over the shifted labels of one unpadded text.
    ids = torch.tensor([tokenizer(long)["input_ids"]])
    with torch.no_grad():
        loss = float(model(input_ids=ids, labels=ids).loss)
    assert math.isclose(math.log(parts[1]["perplexity"]), loss, rel_tol=1e-5)


def test_max_length_cuts_texts(tiny_model_dir: Path, tokenizer) -> None:
    model = _load(tiny_model_dir)
    texts = load_probe_texts()[:3]
    assert probe_perplexity(model, tokenizer, texts, max_length=8)["tokens"] == 3 * 7
    with pytest.raises(ValueError, match="no token to score"):
        probe_perplexity(model, tokenizer, ["", ""])
    with pytest.raises(ValueError, match="max_length"):
        probe_perplexity(model, tokenizer, texts, max_length=1)


def test_rtn_2bit_raises_perplexity(tiny_model_dir: Path, tokenizer) -> None:
    """Scored on the original model's own greedy text, which it predicts well and 2-bit does not."""
    original = _load(tiny_model_dir)
    texts = []
    for prompt in ("The quick brown", "Numbers: 0 1", "She said yes", "Please answer", "The capital of"):
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = original.generate(ids, max_new_tokens=40, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        texts.append(tokenizer.decode(out[0], skip_special_tokens=True))
    base = probe_perplexity(original, tokenizer, texts)["perplexity"]
    by_bits = {}
    for bits in (8, 2):
        model = _load(tiny_model_dir)
        quantize_model_rtn(model, bits, 32, False)
        by_bits[bits] = probe_perplexity(model, tokenizer, texts)["perplexity"]
    assert math.isfinite(base)
    assert abs(by_bits[8] / base - 1) < 0.02  # measured 0.3 %
    assert by_bits[2] > 1.3 * base  # measured 1.7x


@pytest.mark.slow
def test_builtin_model_perplexity() -> None:
    from transformers import AutoTokenizer

    from cluster.models.sources import resolve_model_path

    folder = resolve_model_path("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    fp32 = probe_perplexity(_load(folder), tokenizer)
    assert 1.0 < fp32["perplexity"] < BUILTIN_FP32_MAX_PERPLEXITY
    assert fp32["tokens"] > 500
    model = _load(folder)
    quantize_model_rtn(model, 2, 64, False)
    low = probe_perplexity(model, tokenizer)
    assert low["tokens"] == fp32["tokens"]
    assert low["perplexity"] > 20 * fp32["perplexity"]
