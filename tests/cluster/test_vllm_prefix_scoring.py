"""vLLM option scoring through the prefix cache equals scoring every prompt in full.

vLLM skips its prefix cache for requests that ask for prompt log-probabilities unless told not to;
qtrust tells it not to (``vllm.prefix_scoring``, on by default) so the shared preamble and each
item's question are computed once. The reference here is vLLM's own full computation
(``cached=False``): the cached path must give the same log-probabilities to 1e-4 on TruthfulQA
MC1/MC2 items and on hand-made cases where a cache hit reaches into the scored tokens (those
options are scored again, without the cache). The engine runs its core in a process of its own,
shut down at the end of the module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.engines.base import (
    GenerationRequest,
    GenerationSettings,
    LoglikelihoodRequest,
    LoglikelihoodResult,
)
from cluster.models.sources import resolve_model_path

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

TOL = 1e-4


@pytest.fixture(scope="module")
def engine():
    from cluster.engines.vllm_engine import VLLMEngine
    from cluster.engines.vllm_settings import VLLMSettings

    settings = VLLMSettings(max_model_len=2048, cpu_kv_cache_gib=1, separate_process=True)
    loaded = VLLMEngine.load(resolve_model_path("smollm2-135m"), dtype="float32", settings=settings, num_threads=2)
    yield loaded
    loaded.close()


def _requests(data_dir: Path, name: str, count: int) -> list[LoglikelihoodRequest]:
    from trust.benchmarks import get_benchmark

    items = get_benchmark(name).load_all(data_dir)[:count]
    return [LoglikelihoodRequest(item.id, item.messages, list(item.choices or [])) for item in items]


def _full(engine, requests: list[LoglikelihoodRequest]) -> list[list[float]]:  # type: ignore[no-untyped-def]
    out = []
    for request in requests:
        _, sequences = engine.prompts.continuation_sequences(request.messages, request.continuations)
        out.append(engine.sequence_logprobs(sequences, cached=False))
    return out


def _check(full: list[list[float]], cached: list[LoglikelihoodResult]) -> float:
    assert all(r.error is None for r in cached)
    assert [len(v) for v in full] == [len(r.logprobs) for r in cached]
    return max(abs(a - b) for f, r in zip(full, cached) for a, b in zip(f, r.logprobs))


def test_the_cpu_engine_reuses_32_token_blocks(engine) -> None:  # type: ignore[no-untyped-def]
    info = engine.describe()
    assert info["vllm_block_size"] == "32" and info["vllm_enable_prefix_caching"] == "True"
    assert engine.settings.prefix_scoring


@pytest.mark.parametrize(("name", "count"), [("truthfulqa_mc1", 8), ("truthfulqa_mc2", 4)])
def test_cached_scoring_equals_full_prompts(engine, data_dir: Path, name: str, count: int) -> None:  # type: ignore[no-untyped-def]
    requests = _requests(data_dir, name, count)
    full = _full(engine, requests)
    engine.reset_prefix_cache()
    cold = engine.loglikelihood(requests, GenerationSettings(batch_size=8))
    warm = engine.loglikelihood(requests, GenerationSettings(batch_size=8))  # every prefix now cached
    assert _check(full, cold) <= TOL and _check(full, warm) <= TOL


def test_a_cache_hit_inside_the_scored_tokens_is_scored_again(engine) -> None:  # type: ignore[no-untyped-def]
    """Options that repeat each other's first 40+ tokens: the second run finds them cached up to
    inside the option, so those options are scored again without the cache, and still agree."""
    long_option = " the committee met again on the following Tuesday to discuss the budget, the new roads, " * 2
    requests = [
        LoglikelihoodRequest(
            "rep", [{"role": "completion", "content": "Minutes:"}], [long_option + "yes", long_option + "no"]
        ),
        LoglikelihoodRequest("same", [{"role": "completion", "content": "Minutes:"}], [long_option, long_option]),
    ]
    full = _full(engine, requests)
    engine.reset_prefix_cache()
    engine.rescored_sequences = 0
    first = engine.loglikelihood(requests, GenerationSettings(batch_size=8))
    second = engine.loglikelihood(requests, GenerationSettings(batch_size=8))
    assert engine.rescored_sequences >= 4  # every option of the second call hit the cache past its prompt
    assert _check(full, first) <= TOL and _check(full, second) <= TOL
    assert second[1].logprobs[0] == pytest.approx(second[1].logprobs[1], abs=TOL)


def test_generation_reads_the_cache_and_answers_the_same(engine, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from vllm import SamplingParams

    from trust.benchmarks import get_benchmark

    items = get_benchmark("machine_ethics_fewshot").load_all(data_dir)[:6]
    requests = [GenerationRequest(item.id, item.messages) for item in items]
    engine.reset_prefix_cache()
    cached = engine.generate(requests, GenerationSettings(max_new_tokens=8))
    prompts = [engine.prompts.prompt_ids(r.messages) for r in requests]
    params = SamplingParams(
        temperature=0.0, max_tokens=8, stop_token_ids=sorted(engine.prompts.stop_ids), skip_reading_prefix_cache=True
    )
    outputs = engine._run(prompts, params)
    full = [engine.prompts.decode(engine.prompts.cut_at_stop(list(o.outputs[0].token_ids))) for o in outputs]
    assert [r.text for r in cached] == full and all(full)
    assert all((o.num_cached_tokens or 0) == 0 for o in outputs)  # the reference really skipped the cache
