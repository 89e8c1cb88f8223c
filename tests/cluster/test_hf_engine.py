"""The transformers engine and load_variant on the tiny offline model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cluster.engines.base import (
    Engine,
    GenerationRequest,
    GenerationSettings,
    LoglikelihoodRequest,
)
from cluster.engines.hf import HFEngine
from cluster.models.dtype import parse_dtype
from cluster.quantization.recipes import QuantRecipe
from cluster.variants.load import VariantSource, load_variant
from tests.support.engine_helpers import fail_to_render

try:
    from tests.support.tiny_model import build_tiny_model
except ImportError:  # pytest run without the repository root on sys.path
    from tiny_model import build_tiny_model

PROMPTS = [
    "Hello there",
    "Is it wrong to take credit for someone else's work? Answer wrong or not wrong.",
    "x",
    "The capital of France is Paris, and the capital of Italy is which city, exactly?",
    "Numbers: 1 2 3",
    "Please answer with a single letter.",
]


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="module")
def engine(tiny_path: Path) -> HFEngine:
    return HFEngine.from_pretrained(tiny_path, dtype="float32", device="cpu")


def _requests(prompts: list[str] = PROMPTS) -> list[GenerationRequest]:
    return [
        GenerationRequest(id=f"item-{i}", messages=[{"role": "user", "content": text}])
        for i, text in enumerate(prompts)
    ]


def test_tiny_model_is_deterministic(tmp_path: Path) -> None:
    a = build_tiny_model(tmp_path / "a", seed=3)
    b = build_tiny_model(tmp_path / "b", seed=3)
    c = build_tiny_model(tmp_path / "c", seed=4)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def test_engine_protocol_and_describe(engine: HFEngine) -> None:
    assert isinstance(engine, Engine)
    assert engine.name == "hf"
    info = engine.describe()
    assert info["engine"] == "hf"
    assert info["device"] == "cpu"
    assert info["dtype"] == "float32"
    assert info["transformers"] and info["torch"] == torch.__version__
    assert int(info["num_threads"]) >= 1


def test_generate_one_result_per_request_in_order(engine: HFEngine) -> None:
    requests = _requests()
    results = engine.generate(requests, GenerationSettings(max_new_tokens=8, batch_size=4))
    assert [r.id for r in results] == [r.id for r in requests]
    for result in results:
        assert result.error is None
        assert isinstance(result.text, str)
        assert result.prompt_tokens > 0
        assert 0 < result.completion_tokens <= 8
        assert result.latency_s > 0
    # Longer prompts have more prompt tokens.
    assert results[3].prompt_tokens > results[2].prompt_tokens


def test_greedy_is_deterministic_and_batch_independent(engine: HFEngine) -> None:
    requests = _requests()
    first = engine.generate(requests, GenerationSettings(max_new_tokens=12, batch_size=1))
    again = engine.generate(requests, GenerationSettings(max_new_tokens=12, batch_size=1))
    batched = engine.generate(requests, GenerationSettings(max_new_tokens=12, batch_size=4))
    assert [r.text for r in first] == [r.text for r in again]
    # Left padding must not change what any prompt generates (fp32, greedy).
    assert [r.text for r in first] == [r.text for r in batched]
    assert [r.completion_tokens for r in first] == [r.completion_tokens for r in batched]
    assert [r.prompt_tokens for r in first] == [r.prompt_tokens for r in batched]


def test_completion_tokens_stop_at_eos(engine: HFEngine) -> None:
    assert engine.prompts.cut_at_stop([5, 6, engine.tokenizer.eos_token_id, 7]) == [5, 6]
    assert engine.prompts.cut_at_stop([5, engine.tokenizer.pad_token_id]) == [5]
    assert engine.prompts.cut_at_stop([5, 6]) == [5, 6]


def test_sampling_runs(engine: HFEngine) -> None:
    torch.manual_seed(0)
    results = engine.generate(_requests()[:2], GenerationSettings(max_new_tokens=4, temperature=0.8, batch_size=2))
    assert all(r.error is None and r.completion_tokens > 0 for r in results)


def test_failed_batch_is_retried_item_by_item(engine: HFEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_to_render(engine, monkeypatch)
    requests = _requests(["Hello there", "BOOM", "x"])
    results = engine.generate(requests, GenerationSettings(max_new_tokens=4, batch_size=3))
    assert [r.id for r in results] == ["item-0", "item-1", "item-2"]
    assert results[1].text is None
    assert "RuntimeError: cannot render this prompt" in (results[1].error or "")
    assert results[0].error is None and results[2].error is None
    assert results[0].text is not None and results[2].text is not None


def _round_trip_tokens(engine: HFEngine, prompt_text: str, prompt_ids: list[int]) -> dict[int, str]:
    """Single tokens t whose text, appended to the prompt, tokenizes back to prompt + [t]."""
    special = set(engine.tokenizer.all_special_ids)
    found = {}
    for token in range(len(engine.tokenizer)):
        if token in special:
            continue
        text = engine.tokenizer.decode([token])
        if text and engine.prompts.encode(prompt_text + text) == prompt_ids + [token]:
            found[token] = text
    return found


def test_loglikelihood_matches_direct_scoring_and_prefers_greedy(engine: HFEngine) -> None:
    messages = [{"role": "user", "content": PROMPTS[1]}]
    prompt_text = engine.prompts.text(messages)
    prompt_ids = engine.prompts.encode(prompt_text)
    with torch.inference_mode():
        logp = torch.log_softmax(engine.model(torch.tensor([prompt_ids])).logits[0, -1].float(), -1)
    greedy = int(logp.argmax())
    candidates = _round_trip_tokens(engine, prompt_text, prompt_ids)
    assert greedy in candidates, "pick a prompt whose greedy token round-trips through the tokenizer"
    tokens = list(candidates)
    request = LoglikelihoodRequest(id="q", messages=messages, continuations=[candidates[t] for t in tokens])
    (result,) = engine.loglikelihood([request], GenerationSettings(batch_size=16))
    assert result.error is None
    assert result.prompt_tokens == len(prompt_ids)
    scores = torch.tensor(result.logprobs)
    assert torch.all(torch.isfinite(scores)) and torch.all(scores < 0)
    # The engine scores exactly the continuation token after the prompt ...
    assert torch.allclose(scores, logp[tokens], atol=1e-4)
    # ... so the model's own greedy token scores highest among the single-token continuations.
    assert tokens[int(scores.argmax())] == greedy
    # And it is the token generate() picks first.
    (generated,) = engine.generate(
        [GenerationRequest(id="g", messages=messages)], GenerationSettings(max_new_tokens=1, batch_size=1)
    )
    assert generated.text == candidates[greedy].strip()


def test_loglikelihood_multi_token_is_sum_of_conditionals(engine: HFEngine) -> None:
    messages = [{"role": "user", "content": PROMPTS[0]}]
    prompt_text = engine.prompts.text(messages)
    prompt_ids = engine.prompts.encode(prompt_text)
    continuation = "The capital of Italy is Rome."
    full = engine.prompts.encode(prompt_text + continuation)
    assert full[: len(prompt_ids)] == prompt_ids
    with torch.inference_mode():
        logp = torch.log_softmax(engine.model(torch.tensor([full])).logits[0].float(), -1)
    expected = sum(float(logp[i - 1, full[i]]) for i in range(len(prompt_ids), len(full)))
    request = LoglikelihoodRequest(id="m", messages=messages, continuations=["x", continuation, ""])
    for batch_size in (1, 3):
        (result,) = engine.loglikelihood([request], GenerationSettings(batch_size=batch_size))
        assert result.error is None
        assert len(result.logprobs) == 3
        assert math.isclose(result.logprobs[1], expected, rel_tol=1e-4, abs_tol=1e-4)
        assert result.logprobs[2] == 0.0  # an empty continuation has probability one
        assert result.logprobs[0] < 0


def test_loglikelihood_results_in_order(engine: HFEngine) -> None:
    requests = [
        LoglikelihoodRequest(
            id=f"r{i}", messages=[{"role": "user", "content": p}], continuations=["wrong", "not wrong"]
        )
        for i, p in enumerate(PROMPTS[:3])
    ]
    results = engine.loglikelihood(requests, GenerationSettings(batch_size=2))
    assert [r.id for r in results] == ["r0", "r1", "r2"]
    assert all(len(r.logprobs) == 2 and all(v < 0 for v in r.logprobs) for r in results)


def test_missing_pad_token_falls_back_to_eos(tiny_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    tokenizer.pad_token = None
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    engine = HFEngine(model, tokenizer, device="cpu", num_threads=1)
    assert tokenizer.pad_token == tokenizer.eos_token
    assert tokenizer.padding_side == "left"
    assert engine.describe()["num_threads"] == "1"
    results = engine.generate(_requests()[:3], GenerationSettings(max_new_tokens=4, batch_size=3))
    assert all(r.error is None for r in results)
    torch.set_num_threads(max(1, torch.get_num_threads()))


def test_parse_dtype() -> None:
    assert parse_dtype("bf16") is torch.bfloat16
    assert parse_dtype("float32") is torch.float32
    with pytest.raises(ValueError, match="unknown dtype"):
        parse_dtype("int3")


def test_load_variant_applies_recipe(tiny_path: Path, engine: HFEngine) -> None:
    plain = load_variant(VariantSource(tiny_path, QuantRecipe()), quality_probe=False)
    assert plain.describe()["recipe_method"] == "none"
    assert plain.quantization["storage"] == "none"
    w2 = load_variant(
        VariantSource(tiny_path, QuantRecipe(method="rtn", bits=2, group_size=32), variant_key="3" * 64),
        quality_probe=False,
    )
    info = w2.describe()
    assert info["recipe_method"] == "rtn"
    assert info["recipe_bits"] == "2"
    assert w2.quantization["layers_quantized"] == "14"
    assert float(w2.quantization["mean_relative_error"]) > 0.1
    request = LoglikelihoodRequest(id="v", messages=[{"role": "user", "content": PROMPTS[1]}], continuations=["wrong"])
    settings = GenerationSettings()
    base = plain.loglikelihood([request], settings)[0].logprobs[0]
    assert base == pytest.approx(engine.loglikelihood([request], settings)[0].logprobs[0], abs=1e-5)
    assert w2.loglikelihood([request], settings)[0].logprobs[0] != pytest.approx(base, abs=1e-3)


def test_load_variant_reports_bad_group_size(tiny_path: Path) -> None:
    with pytest.raises(ValueError, match="does not divide in_features 128"):
        load_variant(VariantSource(tiny_path, QuantRecipe(method="rtn", bits=4, group_size=96), variant_key="4" * 64))
